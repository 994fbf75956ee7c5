//! Who checks a token's signature: the host may offer one (Envoy's `verify_signature` foreign
//! function, BoringSSL), else the filter's own RustCrypto verifiers do (`verify.rs`). Here are
//! the forms BoringSSL takes, built without host calls so that they are tested natively and in
//! a Wasm VM: a key as DER `SubjectPublicKeyInfo` (made once, when the key set is read), an
//! ECDSA signature as DER `ECDSA-Sig-Value` (JWS sends `r || s`), and the protobuf messages of
//! Envoy's `source/extensions/common/wasm/ext/verify_signature.proto`.

use std::borrow::Cow;

/// Checks one signature, or hands it back to the filter.
pub trait SignatureVerifier {
    /// Whether the signature holds. `envoy` is the check in the form Envoy's
    /// `verify_signature` takes, `None` where that function cannot do it (RSA-PSS: it sets no
    /// padding; Ed25519: it always passes a digest, which BoringSSL's Ed25519 refuses; HMAC:
    /// no public key). `in_module` is the filter's own check of the same signature.
    fn verify(&self, envoy: Option<&DigestVerify<'_>>, in_module: &dyn Fn() -> bool) -> bool;
}

/// Every signature checked by the filter itself: the choice where no host offers a verifier
/// (`meshrules explain`, the tests, the Node VM) and for `signatureVerifier: wasm`.
pub struct InModule;

impl SignatureVerifier for InModule {
    fn verify(&self, _envoy: Option<&DigestVerify<'_>>, in_module: &dyn Fn() -> bool) -> bool {
        in_module()
    }
}

/// A digest BoringSSL's `EVP_DigestVerify` is set up with (`getHashFunction` in Envoy's
/// `source/common/crypto/utility_impl.cc` names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        }
    }
}

/// One `EVP_DigestVerify` over the token's signing input: what jwt_authn does for RS* (PKCS #1
/// v1.5, BoringSSL's default padding) and for ECDSA (`ECDSA_do_verify` on the digest).
#[derive(Debug)]
pub struct DigestVerify<'a> {
    pub(super) hash: Hash,
    /// DER `SubjectPublicKeyInfo` (BoringSSL's `EVP_parse_public_key`).
    pub(super) public_key: &'a [u8],
    /// As the token carries it.
    pub(super) signature: &'a [u8],
    /// The signature is JWS's ECDSA `r || s`.
    pub(super) ecdsa: bool,
    /// The signing input, `header.payload`.
    pub(super) text: &'a [u8],
}

impl DigestVerify<'_> {
    /// The signature as `EVP_DigestVerify` reads it: RSA's as is, ECDSA's as DER.
    pub fn signature(&self) -> Cow<'_, [u8]> {
        if self.ecdsa {
            Cow::Owned(ecdsa_signature_der(self.signature))
        } else {
            Cow::Borrowed(self.signature)
        }
    }

    /// Envoy's `VerifySignatureArguments`, serialized.
    pub fn arguments(&self) -> Vec<u8> {
        let signature = self.signature();
        // verify_signature.proto: hash_function = 1, public_key = 2 (DER), signature = 3,
        // text = 4; each a length-delimited field (wire type 2).
        let fields: [(u8, &[u8]); 4] = [
            (1, self.hash.name().as_bytes()),
            (2, self.public_key),
            (3, &signature),
            (4, self.text),
        ];
        let mut out = Vec::with_capacity(fields.iter().map(|(_, v)| v.len() + 6).sum());
        for (field, value) in fields {
            out.push((field << 3) | 2);
            varint(value.len() as u64, &mut out);
            out.extend_from_slice(value);
        }
        out
    }
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

/// Envoy's `VerifySignatureResult` (`result = 1`, a bool; `error = 2`, a string): whether the
/// signature held, `None` for bytes that are no such message. An absent `result` is false
/// (proto3), which is how Envoy sends a failed check: only its error text.
pub fn verify_signature_result(mut bytes: &[u8]) -> Option<bool> {
    let mut result = false;
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes)?;
        match (key >> 3, key & 7) {
            (1, 0) => result = read_varint(&mut bytes)? != 0,
            (_, 0) => {
                read_varint(&mut bytes)?;
            }
            (_, 2) => {
                let len = usize::try_from(read_varint(&mut bytes)?).ok()?;
                bytes = bytes.get(len..)?;
            }
            _ => return None,
        }
    }
    Some(result)
}

// ---- DER ----

/// One DER element: tag, definite length, contents.
fn tlv(tag: u8, contents: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;

/// A non-negative DER INTEGER from big-endian bytes: leading zeros dropped, one put back when
/// the top bit is set, `0` for none.
fn unsigned_integer(be: &[u8], out: &mut Vec<u8>) {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let be = &be[start..];
    let mut contents = Vec::with_capacity(be.len() + 1);
    if be.first().is_none_or(|&b| b >= 0x80) {
        contents.push(0);
    }
    contents.extend_from_slice(be);
    tlv(INTEGER, &contents, out);
}

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from JWS's `r || s`, split as
/// jwt_authn splits it (two halves read as big-endian numbers, an odd last byte left out), so
/// that BoringSSL checks the very numbers jwt_authn's `ECDSA_do_verify` would.
pub(super) fn ecdsa_signature_der(sig: &[u8]) -> Vec<u8> {
    let half = sig.len() / 2;
    let mut contents = Vec::with_capacity(sig.len() + 6);
    unsigned_integer(&sig[..half], &mut contents);
    unsigned_integer(&sig[half..2 * half], &mut contents);
    let mut out = Vec::with_capacity(contents.len() + 4);
    tlv(SEQUENCE, &contents, &mut out);
    out
}

/// `SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT
/// STRING }` (RFC 5280), the algorithm already DER.
fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(key.len() + 1);
    // No unused bits.
    bits.push(0);
    bits.extend_from_slice(key);
    let mut contents = Vec::with_capacity(algorithm.len() + bits.len() + 4);
    contents.extend_from_slice(algorithm);
    tlv(BIT_STRING, &bits, &mut contents);
    let mut out = Vec::with_capacity(contents.len() + 4);
    tlv(SEQUENCE, &contents, &mut out);
    out
}

/// `SEQUENCE { rsaEncryption (1.2.840.113549.1.1.1), NULL }` (RFC 3279).
const RSA_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// An RSA key's `SubjectPublicKeyInfo`: PKCS #1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER,
/// publicExponent INTEGER }` under rsaEncryption. `n` and `e` big-endian.
pub(super) fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(n.len() + e.len() + 10);
    unsigned_integer(n, &mut ints);
    unsigned_integer(e, &mut ints);
    let mut key = Vec::with_capacity(ints.len() + 4);
    tlv(SEQUENCE, &ints, &mut key);
    spki(RSA_ALGORITHM, &key)
}

/// The named curves of an EC `SubjectPublicKeyInfo` (RFC 5480).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
    P521,
}

/// An EC key's `SubjectPublicKeyInfo`: `SEQUENCE { id-ecPublicKey (1.2.840.10045.2.1), the
/// curve's OID }` and the uncompressed SEC1 point `04 || x || y`.
pub(super) fn ec_spki(curve: Curve, point: &[u8]) -> Vec<u8> {
    const EC_PUBLIC_KEY: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let named: &[u8] = match curve {
        // prime256v1: 1.2.840.10045.3.1.7
        Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        // secp384r1: 1.3.132.0.34
        Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        // secp521r1: 1.3.132.0.35
        Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
    };
    let mut algorithm = Vec::with_capacity(EC_PUBLIC_KEY.len() + named.len() + 2);
    tlv(
        SEQUENCE,
        &[&EC_PUBLIC_KEY[..], named].concat(),
        &mut algorithm,
    );
    spki(&algorithm, point)
}
