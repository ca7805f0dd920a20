"""What the array model's modules share: statuses, the error answer, parameters."""

GIB = 1 << 30
RAID_FACTOR = {"0": 1.0, "1": 2.0, "5": 1.25, "6": 1.5}  # raw GB per user GB
OPERATIONAL, CREATING, PREPARED, DELETING = "OPERATIONAL", "CREATING", "PREPARED", "DELETING"
NOT_VALID = "Not in a valid state"


class SimError(Exception):
    """An HTTP error answer: ``status`` and the text of ``<error>``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def is_iqn(endpoint: str) -> bool:
    return endpoint.lower().startswith(("iqn.", "eui.", "naa."))



def required(p: dict, key: str) -> str:
    if not p.get(key):
        raise SimError(400, f"Missing parameter {key}")
    return p[key]


def integer(p: dict, key: str) -> int:
    try:
        return int(required(p, key))
    except ValueError:
        raise SimError(400, f"Parameter {key} must be an integer") from None


def _qos(p: dict) -> dict:
    return {k: p.get(k, "") for k in ("IOPSmin", "IOPSmax", "IOPSburst")}

