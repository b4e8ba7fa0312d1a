"""Wire protocols of the legacy cooperation processor (O3) and the billing transfer (O5):
REST, SOAP and SQL legacy systems, and SFTP to the legacy billing system.

`bossa.partners.adapters.sftp` is imported where a transfer runs, not here: asyncssh
takes a noticeable share of the API's start-up, and the API never transfers files."""

from bossa.partners.adapters.base import LegacyError, LegacySystem, TransferError
from bossa.partners.adapters.rest import RestSystem
from bossa.partners.adapters.soap import SoapSystem
from bossa.partners.adapters.sql import SqlSystem

__all__ = [
    "LegacyError",
    "LegacySystem",
    "RestSystem",
    "SoapSystem",
    "SqlSystem",
    "TransferError",
]
