#!/bin/sh
# Regenerates the test keys and the public JWKS in this folder (run from this folder).
# Test keys only: never use them for anything else.
set -eu
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2048.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out ec256.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out ec256b.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -pkeyopt ec_param_enc:named_curve -out ec384.pem
openssl genpkey -algorithm ED25519 -out ed25519.pem
openssl rand -hex 32 > hmac.hex
python3 jwks.py > jwks.json
