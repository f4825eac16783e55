"""pycose keys from our SEC1 public keys, for checking messages with an
independent COSE library."""

from cryptography.hazmat.primitives.asymmetric import ec
from pycose.keys import EC2Key
from pycose.keys.curves import P256


def pycose_key(pub33: bytes) -> EC2Key:
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub33)
    nums = point.public_numbers()
    return EC2Key(crv=P256, x=nums.x.to_bytes(32, "big"), y=nums.y.to_bytes(32, "big"))
