"""Wire protocols of the legacy cooperation processor (O3) and the billing transfer (O5):
REST, SOAP and SQL legacy systems, and SFTP to the legacy billing system."""

from bossa.partners.adapters.base import LegacyError, LegacySystem
from bossa.partners.adapters.rest import RestSystem
from bossa.partners.adapters.sftp import SftpTarget, TransferError
from bossa.partners.adapters.soap import SoapSystem
from bossa.partners.adapters.sql import SqlSystem

__all__ = [
    "LegacyError",
    "LegacySystem",
    "RestSystem",
    "SftpTarget",
    "SoapSystem",
    "SqlSystem",
    "TransferError",
]
