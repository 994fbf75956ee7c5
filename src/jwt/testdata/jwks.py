"""Prints the public JWKS of the test keys in this folder (Python stdlib + the openssl CLI)."""
import base64
import json
import re
import subprocess


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hexblock(text: str, label: str) -> bytes:
    """The colon-separated hex block after `label:` in `openssl pkey -text` output."""
    match = re.search(label + r":\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
    return bytes.fromhex(re.sub(r"[\s:]", "", match.group(1)))


def text(pem: str) -> str:
    return subprocess.run(["openssl", "pkey", "-in", pem, "-text", "-noout"],
                          check=True, capture_output=True, text=True).stdout


rsa = text("rsa2048.pem")
n = hexblock(rsa, "modulus").lstrip(b"\x00")
e = int(re.search(r"publicExponent: (\d+)", rsa).group(1))
keys = [{"kty": "RSA", "kid": "rsa", "use": "sig", "n": b64u(n),
         "e": b64u(e.to_bytes((e.bit_length() + 7) // 8, "big"))}]
for name, crv, size in (("ec256", "P-256", 32), ("ec256b", "P-256", 32), ("ec384", "P-384", 48)):
    point = hexblock(text(name + ".pem"), "pub")  # 04 || x || y
    keys.append({"kty": "EC", "kid": name, "crv": crv,
                 "x": b64u(point[1:1 + size]), "y": b64u(point[1 + size:])})
keys.append({"kty": "OKP", "kid": "ed25519", "crv": "Ed25519",
             "x": b64u(hexblock(text("ed25519.pem"), "pub"))})
secret = bytes.fromhex(open("hmac.hex").read().strip())
keys.append({"kty": "oct", "kid": "hmac", "k": b64u(secret)})
print(json.dumps({"keys": keys}, indent=2))
