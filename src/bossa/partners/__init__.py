"""The partner platform (SPEC O1-O5, seed 004): biz objects and templates, the open
interface partners run them through, the legacy cooperation processor, and the billing
processor that turns runs into MDR files on the legacy billing system's SFTP server.
See docs/partners.md.
"""

from bossa.partners.models import (
    OBJECTS,
    BillingLog,
    PartnerRequest,
    PolicyRequest,
    RunMode,
    RunResult,
    SystemRequest,
    TemplateRequest,
    check_template,
    render_mdr,
)
from bossa.partners.service import (
    BILLING_LANE,
    RUNS_LANE,
    Platform,
    add_policy,
    collect,
    correct,
    platform,
    register_template,
    run_template,
    set_partner,
    set_system,
    transmit,
    write_files,
)
from bossa.partners.settings import PartnersSettings

__all__ = [
    "BILLING_LANE",
    "OBJECTS",
    "RUNS_LANE",
    "BillingLog",
    "PartnerRequest",
    "PartnersSettings",
    "Platform",
    "PolicyRequest",
    "RunMode",
    "RunResult",
    "SystemRequest",
    "TemplateRequest",
    "add_policy",
    "check_template",
    "collect",
    "correct",
    "platform",
    "register_template",
    "render_mdr",
    "run_template",
    "set_partner",
    "set_system",
    "transmit",
    "write_files",
]
