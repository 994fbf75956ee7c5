#!/bin/sh
# Regenerates the test keys and the public JWKS in this folder (run from this folder).
# Test keys only: never use them for anything else.
set -eu
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2048.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out ec256.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out ec256b.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -pkeyopt ec_param_enc:named_curve -out ec384.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -pkeyopt ec_param_enc:named_curve -out ec521.pem
openssl genpkey -algorithm ED25519 -out ed25519.pem
openssl rand -hex 32 > hmac.hex
python3 jwks.py > jwks.json
# Self-signed certificates of two of the keys, for Google's X.509 certificate-map JWKS.
openssl req -new -x509 -key rsa2048.pem -subj "/CN=meshrules test" -days 36500 -set_serial 1 -sha256 -out rsa2048.crt
openssl req -new -x509 -key ec256.pem -subj "/CN=meshrules test ec" -days 36500 -set_serial 2 -sha256 -out ec256.crt
