//! The parts of an X.509 certificate (RFC 5280) the filter reads: the subject public key (a
//! Google certificate-map JWKS, `src/jwt/jwks.rs`), the subjectAltName URI and DNS names and
//! the subject as Envoy prints it (the peer certificate, `src/authz/peer.rs`). A walk with
//! `der` over the fields used, because `x509-cert`'s full decoder cost 72 KB of the module.

use std::fmt::Write;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier};
use der::{Decode, Length, Reader, SliceReader, Tag, TagNumber, Tagged};

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// The DER of the first PEM certificate in `pem`: the base64 between its BEGIN and END lines,
/// whitespace dropped and padding optional, as BoringSSL's PEM reader takes it.
pub fn pem_certificate(pem: &str) -> Option<Vec<u8>> {
    let (_, body) = pem.split_once(PEM_BEGIN)?;
    let (body, _) = body.split_once(PEM_END)?;
    let b64: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    const PEM_B64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    PEM_B64.decode(b64).ok()
}

/// A DER certificate, its outline checked and the fields used located.
pub struct Certificate<'a> {
    /// The subject's `RDNSequence` (the Name SEQUENCE's contents), read by [`Self::subject`].
    subject: &'a [u8],
    algorithm: ObjectIdentifier,
    key: &'a [u8],
    /// The `Extensions` SEQUENCE (inside `[3]`); empty without extensions.
    extensions: &'a [u8],
}

/// The subjectAltName URI and DNS names, each in the certificate's order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AltNames {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
}

const VERSION: Tag = context(0, true);
const EXTENSIONS: Tag = context(3, true);
const DNS_NAME: Tag = context(2, false);
const URI: Tag = context(6, false);
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

const fn context(number: u32, constructed: bool) -> Tag {
    Tag::ContextSpecific {
        constructed,
        number: TagNumber(number),
    }
}

impl<'a> Certificate<'a> {
    /// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE, signature BIT
    /// STRING }`, `tbsCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER,
    /// signature SEQUENCE, issuer SEQUENCE, validity SEQUENCE, subject SEQUENCE,
    /// subjectPublicKeyInfo SEQUENCE, [1] [2] OPTIONAL, [3] extensions OPTIONAL }`. `None`
    /// when `der` is not that. The subject and extensions are checked only when read.
    pub fn from_der(der: &'a [u8]) -> Option<Self> {
        Self::decode(der).ok()
    }

    fn decode(der: &'a [u8]) -> der::Result<Self> {
        let mut reader = SliceReader::new(der)?;
        let cert = reader.sequence(|cert| {
            let tbs = cert.sequence(|tbs| {
                if Tag::peek(tbs)? == VERSION {
                    AnyRef::decode(tbs)?;
                }
                expect(tbs, Tag::Integer)?;
                for _ in 0..3 {
                    expect(tbs, Tag::Sequence)?;
                }
                let subject = expect(tbs, Tag::Sequence)?;
                let (algorithm, key) = tbs.sequence(|spki| {
                    let algorithm = spki.sequence(|alg| {
                        let oid = ObjectIdentifier::decode(alg)?;
                        // The parameters (NULL for RSA, the curve for EC) are not needed.
                        while !alg.is_finished() {
                            AnyRef::decode(alg)?;
                        }
                        Ok::<_, der::Error>(oid)
                    })?;
                    Ok::<_, der::Error>((algorithm, BitStringRef::decode(spki)?))
                })?;
                let key = key.as_bytes().ok_or_else(|| Tag::BitString.value_error())?;
                let mut extensions: &[u8] = &[];
                // issuerUniqueID, subjectUniqueID, extensions.
                while !tbs.is_finished() {
                    let field = AnyRef::decode(tbs)?;
                    if field.tag() == EXTENSIONS {
                        extensions = field.value();
                    }
                }
                Ok::<_, der::Error>(Certificate {
                    subject,
                    algorithm,
                    key,
                    extensions,
                })
            })?;
            expect(cert, Tag::Sequence)?;
            BitStringRef::decode(cert)?;
            Ok::<_, der::Error>(tbs)
        })?;
        reader.finish()?;
        Ok(cert)
    }

    /// The subject public key: its algorithm and its key bytes.
    pub fn public_key(&self) -> (ObjectIdentifier, &'a [u8]) {
        (self.algorithm, self.key)
    }

    /// The URI and DNS names of the first subjectAltName extension (BoringSSL refuses a
    /// certificate with two); empty without one; `None` when the extensions do not parse.
    /// IA5String bytes that are not UTF-8 read as U+FFFD (BoringSSL lets them through).
    pub fn alt_names(&self) -> Option<AltNames> {
        alt_names(self.extensions).ok()
    }

    /// The subject as Envoy gives it to RBAC: BoringSSL's `X509_NAME_print_ex` with
    /// `XN_FLAG_RFC2253` ([`rfc2253`]). `None` when the Name does not parse.
    pub fn subject(&self) -> Option<String> {
        rfc2253(self.subject).ok()
    }
}

/// The value of the next field, which must have `tag`.
fn expect<'a>(r: &mut SliceReader<'a>, tag: Tag) -> der::Result<&'a [u8]> {
    let field = AnyRef::decode(r)?;
    field.tag().assert_eq(tag)?;
    Ok(field.value())
}

fn alt_names(extensions: &[u8]) -> der::Result<AltNames> {
    let mut names = AltNames::default();
    if extensions.is_empty() {
        return Ok(names);
    }
    let mut reader = SliceReader::new(extensions)?;
    let san = reader.sequence(|list| {
        let mut san = None;
        while !list.is_finished() {
            // Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }
            let (id, value) = list.sequence(|ext| {
                let id = ObjectIdentifier::decode(ext)?;
                if Tag::peek(ext)? == Tag::Boolean {
                    bool::decode(ext)?;
                }
                Ok::<_, der::Error>((id, expect(ext, Tag::OctetString)?))
            })?;
            if id == SUBJECT_ALT_NAME && san.is_none() {
                san = Some(value);
            }
        }
        Ok::<_, der::Error>(san)
    })?;
    reader.finish()?;
    let Some(san) = san else {
        return Ok(names);
    };
    let mut reader = SliceReader::new(san)?;
    reader.sequence(|list| {
        while !list.is_finished() {
            let name = AnyRef::decode(list)?;
            let into = match name.tag() {
                URI => &mut names.uris,
                DNS_NAME => &mut names.dns,
                _ => continue,
            };
            into.push(String::from_utf8_lossy(name.value()).into_owned());
        }
        Ok::<_, der::Error>(())
    })?;
    reader.finish()?;
    Ok(names)
}

/// BoringSSL's short names (`OBJ_nid2sn`) of the attributes certificates carry; the others
/// print as their dotted OID with the value in hex, as BoringSSL prints OIDs it does not know.
const SHORT_NAMES: [(ObjectIdentifier, &str); 21] = [
    (ObjectIdentifier::new_unwrap("2.5.4.3"), "CN"),
    (ObjectIdentifier::new_unwrap("2.5.4.4"), "SN"),
    (ObjectIdentifier::new_unwrap("2.5.4.5"), "serialNumber"),
    (ObjectIdentifier::new_unwrap("2.5.4.6"), "C"),
    (ObjectIdentifier::new_unwrap("2.5.4.7"), "L"),
    (ObjectIdentifier::new_unwrap("2.5.4.8"), "ST"),
    (ObjectIdentifier::new_unwrap("2.5.4.9"), "street"),
    (ObjectIdentifier::new_unwrap("2.5.4.10"), "O"),
    (ObjectIdentifier::new_unwrap("2.5.4.11"), "OU"),
    (ObjectIdentifier::new_unwrap("2.5.4.12"), "title"),
    (ObjectIdentifier::new_unwrap("2.5.4.15"), "businessCategory"),
    (ObjectIdentifier::new_unwrap("2.5.4.17"), "postalCode"),
    (ObjectIdentifier::new_unwrap("2.5.4.41"), "name"),
    (ObjectIdentifier::new_unwrap("2.5.4.42"), "GN"),
    (ObjectIdentifier::new_unwrap("2.5.4.43"), "initials"),
    (
        ObjectIdentifier::new_unwrap("2.5.4.44"),
        "generationQualifier",
    ),
    (ObjectIdentifier::new_unwrap("2.5.4.46"), "dnQualifier"),
    (ObjectIdentifier::new_unwrap("2.5.4.65"), "pseudonym"),
    (
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1"),
        "emailAddress",
    ),
    (
        ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.1"),
        "UID",
    ),
    (
        ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.25"),
        "DC",
    ),
];

/// `XN_FLAG_RFC2253`: the attributes last to first (`DN_REV`, within a multi-valued RDN
/// too), `,` between RDNs and `+` inside one, no spaces, short names (`FN_SN`); an attribute
/// without a short name is `OID=#hex` (`DUMP_UNKNOWN_FIELDS`), as is a value that is not a
/// string type (`DUMP_UNKNOWN`, `DUMP_DER`: the hex is of the whole DER value).
fn rfc2253(rdn_sequence: &[u8]) -> der::Result<String> {
    let mut entries = Vec::new();
    let mut rdns = SliceReader::new(rdn_sequence)?;
    let mut rdn = 0usize;
    while !rdns.is_finished() {
        let mut attributes = SliceReader::new(expect(&mut rdns, Tag::Set)?)?;
        while !attributes.is_finished() {
            entries.push(attributes.sequence(|atv| {
                let oid = ObjectIdentifier::decode(atv)?;
                let tlv = atv.read_slice(atv.remaining_len())?;
                let (tag, value) = attribute_value(tlv)?;
                Ok::<_, der::Error>((rdn, oid, tlv, tag, value))
            })?);
        }
        rdn += 1;
    }
    let mut out = String::new();
    let mut previous = None;
    for &(rdn, oid, tlv, tag, value) in entries.iter().rev() {
        match previous {
            Some(p) if p == rdn => out.push('+'),
            Some(_) => out.push(','),
            None => {}
        }
        previous = Some(rdn);
        let short = SHORT_NAMES.iter().find(|(o, _)| *o == oid).map(|(_, n)| *n);
        match short {
            Some(name) => out.push_str(name),
            None => {
                let _ = write!(out, "{oid}");
            }
        }
        out.push('=');
        match short.and_then(|_| string_value(tag, value)) {
            Some(text) => escape(&mut out, &text),
            None => {
                out.push('#');
                for b in tlv {
                    let _ = write!(out, "{b:02X}");
                }
            }
        }
    }
    Ok(out)
}

/// An attribute's value, the rest of its AttributeTypeAndValue: its tag (low tag numbers only,
/// as BoringSSL's ASN1_PRINTABLE) and contents. Read by hand because `der`'s `Tag` refuses
/// UniversalString, and other tags BoringSSL would print.
fn attribute_value(tlv: &[u8]) -> der::Result<(u8, &[u8])> {
    let mut reader = SliceReader::new(tlv)?;
    let tag = reader.read_byte()?;
    if tag & 0x1F == 0x1F {
        return Err(reader.error(der::ErrorKind::TagNumberInvalid));
    }
    let len = Length::decode(&mut reader)?;
    let value = reader.read_slice(len)?;
    reader.finish()?;
    Ok((tag, value))
}

/// The text of a string value, by its type as BoringSSL reads it: UTF8String as UTF-8 (U+FFFD
/// for what is not), BMPString as UCS-2, UniversalString as UCS-4, and the others (Numeric,
/// Printable, T61, IA5, Visible, the two times) as Latin-1. `None` for any other type.
fn string_value(tag: u8, value: &[u8]) -> Option<String> {
    let units = |size: usize| -> Option<String> {
        if !value.len().is_multiple_of(size) {
            return None;
        }
        let chars = value.chunks(size).map(|unit| {
            let code = unit.iter().fold(0u32, |c, &b| c << 8 | u32::from(b));
            char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
        });
        Some(chars.collect())
    };
    match tag {
        12 => Some(String::from_utf8_lossy(value).into_owned()),
        18 | 19 | 20 | 22 | 23 | 24 | 26 => units(1),
        28 => units(4),
        30 => units(2),
        _ => None,
    }
}

/// BoringSSL's `do_esc_char` with `ASN1_STRFLGS_RFC2253`, byte by byte of the UTF-8 text
/// (`UTF8_CONVERT`): bytes above 0x7F and control characters as `\XX` (`ESC_MSB`,
/// `ESC_CTRL`); `\`, `"`, `,`, `+`, `<`, `>`, `;`, a leading space or `#` and a trailing space
/// with a backslash (`ESC_2253`).
fn escape(out: &mut String, text: &str) {
    let last = text.len().saturating_sub(1);
    for (i, b) in text.bytes().enumerate() {
        match b {
            0..0x20 | 0x7F.. => {
                let _ = write!(out, "\\{b:02X}");
            }
            b'\\' | b'"' | b',' | b'+' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' ' | b'#' if i == 0 => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' ' if i == last => out.push_str("\\ "),
            _ => out.push(char::from(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -utf8 -multivalue-rdn
    /// -subj '/C=GB/ST=Some State/L=Lon\+don/O=Sue\, Grabbit and Runn/OU=Sales+CN=J. Smith/
    /// emailAddress=x@example.com/DC=example/CN= #lead;<q>"\\é=trail ' -addext
    /// 'subjectAltName=DNS:a.example,URI:spiffe://td/ns/a/sa/one,email:x@example.com,
    /// IP:10.0.0.1,DNS:b.example,URI:spiffe://td/ns/b/sa/two,URI:https://three.example/p?q=1'`
    const ALT: &str = "-----BEGIN CERTIFICATE-----
MIIDejCCAx+gAwIBAgIUGUtCq+lCK0bpGsEedMNVNkmydfYwCgYIKoZIzj0EAwIw
gcwxCzAJBgNVBAYTAkdCMRMwEQYDVQQIDApTb21lIFN0YXRlMRAwDgYDVQQHDAdM
b24rZG9uMR4wHAYDVQQKDBVTdWUsIEdyYWJiaXQgYW5kIFJ1bm4xHzAMBgNVBAsM
BVNhbGVzMA8GA1UEAwwISi4gU21pdGgxHDAaBgkqhkiG9w0BCQEWDXhAZXhhbXBs
ZS5jb20xFzAVBgoJkiaJk/IsZAEZFgdleGFtcGxlMR4wHAYDVQQDDBUgI2xlYWQ7
PHE+IlzDqT10cmFpbCAwIBcNMjYxMjAxMjI0MjMwWhgPMjEyNjExMDcyMjQyMzBa
MIHMMQswCQYDVQQGEwJHQjETMBEGA1UECAwKU29tZSBTdGF0ZTEQMA4GA1UEBwwH
TG9uK2RvbjEeMBwGA1UECgwVU3VlLCBHcmFiYml0IGFuZCBSdW5uMR8wDAYDVQQL
DAVTYWxlczAPBgNVBAMMCEouIFNtaXRoMRwwGgYJKoZIhvcNAQkBFg14QGV4YW1w
bGUuY29tMRcwFQYKCZImiZPyLGQBGRYHZXhhbXBsZTEeMBwGA1UEAwwVICNsZWFk
OzxxPiJcw6k9dHJhaWwgMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEugW7RzB4
13fXBTSCMhcGnLTPx5jEWOOUT3DcxFBC+UJNIj4yQrUnSDXWaLk1bkKwYDVn067W
WMB4V2CBKScaMKOB2jCB1zAdBgNVHQ4EFgQU9wnwPi9Eb0wOPz65Sbhzar/UuvEw
HwYDVR0jBBgwFoAU9wnwPi9Eb0wOPz65Sbhzar/UuvEwDwYDVR0TAQH/BAUwAwEB
/zCBgwYDVR0RBHwweoIJYS5leGFtcGxlhhdzcGlmZmU6Ly90ZC9ucy9hL3NhL29u
ZYENeEBleGFtcGxlLmNvbYcECgAAAYIJYi5leGFtcGxlhhdzcGlmZmU6Ly90ZC9u
cy9iL3NhL3R3b4YbaHR0cHM6Ly90aHJlZS5leGFtcGxlL3A/cT0xMAoGCCqGSM49
BAMCA0kAMEYCIQDFsrV3xpQnNNx6Mo1NJ+/o1fFHnuaiLSUvkfF0OPizHAIhAI1u
0O/9USdMx1wi6wRgIplbUj7Zi+SOgmZmXWncwfEt
-----END CERTIFICATE-----
";
    /// `openssl req -x509 ... -subj '/CN=plain' -addext basicConstraints=CA:FALSE`: extensions,
    /// none of them a subjectAltName.
    const NO_SAN: &str = "-----BEGIN CERTIFICATE-----
MIIBcjCCARegAwIBAgIUJvnX7o/bNB68udgSI4ENQj1QD3MwCgYIKoZIzj0EAwIw
EDEOMAwGA1UEAwwFcGxhaW4wIBcNMjYxMjAxMjI0MjIxWhgPMjEyNjExMDcyMjQy
MjFaMBAxDjAMBgNVBAMMBXBsYWluMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
ugW7RzB413fXBTSCMhcGnLTPx5jEWOOUT3DcxFBC+UJNIj4yQrUnSDXWaLk1bkKw
YDVn067WWMB4V2CBKScaMKNNMEswHQYDVR0OBBYEFPcJ8D4vRG9MDj8+uUm4c2q/
1LrxMB8GA1UdIwQYMBaAFPcJ8D4vRG9MDj8+uUm4c2q/1LrxMAkGA1UdEwQCMAAw
CgYIKoZIzj0EAwIDSQAwRgIhAP23RnL/tSHV8lvEUas8s7UyBskYOK0FBLjOOF+1
fgwdAiEAyk3eg8b8AFOkxcA5OJDvyfBM3Hm/kzeULkZKU3fJzeo=
-----END CERTIFICATE-----
";
    /// `openssl x509 -req` from a CSR for `/O=v1`: a version 1 certificate (no `[0]` version,
    /// no extensions).
    const V1: &str = "-----BEGIN CERTIFICATE-----
MIIBFTCBvQIUHCRYSxyYihERMiOQqs8Wp2uX1+MwCgYIKoZIzj0EAwIwDTELMAkG
A1UECgwCdjEwIBcNMjYxMjAxMjI0MjIyWhgPMjEyNjExMDcyMjQyMjJaMA0xCzAJ
BgNVBAoMAnYxMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEugW7RzB413fXBTSC
MhcGnLTPx5jEWOOUT3DcxFBC+UJNIj4yQrUnSDXWaLk1bkKwYDVn067WWMB4V2CB
KScaMDAKBggqhkjOPQQDAgNHADBEAiA7oDmmbn2a0Qdl+M9VvTog33eFwMuYo+Nh
S03rPVoEiAIgALwFAs/uMejF0Dr6xZwe0mqJiADEDtAcUXt9/5T8N3I=
-----END CERTIFICATE-----
";

    fn cert(pem: &str) -> Vec<u8> {
        pem_certificate(pem).unwrap()
    }

    #[test]
    fn alt_names_are_every_uri_and_every_dns_name_in_order() {
        let der = cert(ALT);
        let names = Certificate::from_der(&der).unwrap().alt_names();
        assert_eq!(
            names,
            Some(AltNames {
                uris: vec![
                    "spiffe://td/ns/a/sa/one".into(),
                    "spiffe://td/ns/b/sa/two".into(),
                    "https://three.example/p?q=1".into(),
                ],
                dns: vec!["a.example".into(), "b.example".into()],
            })
        );
    }

    #[test]
    fn a_certificate_without_the_extension_has_no_alt_names() {
        for pem in [NO_SAN, V1] {
            let der = cert(pem);
            let cert = Certificate::from_der(&der).unwrap();
            assert_eq!(cert.alt_names(), Some(AltNames::default()));
        }
    }

    /// The expected text is `openssl x509 -noout -subject -nameopt RFC2253` of the fixtures.
    #[test]
    fn subject_is_printed_as_boringssl_rfc2253_with_its_escapes() {
        let cases = [
            (
                ALT,
                r#"CN=\ #lead\;\<q\>\"\\\C3\A9=trail\ ,DC=example,emailAddress=x@example.com,CN=J. Smith+OU=Sales,O=Sue\, Grabbit and Runn,L=Lon\+don,ST=Some State,C=GB"#,
            ),
            (NO_SAN, "CN=plain"),
            (V1, "O=v1"),
        ];
        for (pem, subject) in cases {
            let der = cert(pem);
            let cert = Certificate::from_der(&der).unwrap();
            assert_eq!(cert.subject().as_deref(), Some(subject));
        }
    }

    /// An RDN of one attribute: its OID and its DER value.
    type Rdn<'a> = (&'a str, &'a [u8]);

    /// An RDNSequence of the given RDNs.
    fn name(rdns: &[Rdn]) -> Vec<u8> {
        let mut out = Vec::new();
        for (oid, value) in rdns {
            let oid = ObjectIdentifier::new(oid).unwrap();
            let oid = oid.as_bytes();
            let atv_len = 2 + oid.len() + value.len();
            out.extend([
                0x31,
                (atv_len + 2) as u8,
                0x30,
                atv_len as u8,
                6,
                oid.len() as u8,
            ]);
            out.extend(oid);
            out.extend(*value);
        }
        out
    }

    #[test]
    fn subject_values_by_type_and_attributes_without_a_short_name() {
        let cases: [(&[Rdn], &str); 7] = [
            // BMPString "é€" and UniversalString "😀", as UTF-8 bytes escaped.
            (
                &[("2.5.4.3", &[30, 4, 0, 0xE9, 0x20, 0xAC])],
                r"CN=\C3\A9\E2\82\AC",
            ),
            (
                &[("2.5.4.3", &[28, 4, 0, 1, 0xF6, 0x00])],
                r"CN=\F0\9F\98\80",
            ),
            // T61String read as Latin-1; control characters escaped.
            (&[("2.5.4.10", &[20, 3, 0xE9, 0x0A, b'x'])], r"O=\C3\A9\0Ax"),
            // A lone space is both the first and the last character.
            (&[("2.5.4.11", &[12, 1, b' '])], r"OU=\ "),
            // Not a string type: the DER value in hex.
            (&[("2.5.4.3", &[2, 1, 5])], "CN=#020105"),
            // No short name: the dotted OID and the value in hex.
            (&[("1.2.3.4", &[12, 2, b'h', b'i'])], "1.2.3.4=#0C026869"),
            (
                &[
                    ("2.5.4.6", &[19, 2, b'G', b'B']),
                    ("2.5.4.3", &[12, 1, b'a']),
                ],
                "CN=a,C=GB",
            ),
        ];
        for (rdns, text) in cases {
            assert_eq!(rfc2253(&name(rdns)).as_deref(), Ok(text), "{rdns:?}");
        }
        assert_eq!(rfc2253(&[]).as_deref(), Ok(""));
    }

    #[test]
    fn truncated_or_garbage_der_is_none() {
        let der = cert(ALT);
        for len in 0..der.len() {
            assert!(Certificate::from_der(&der[..len]).is_none(), "{len}");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(Certificate::from_der(&trailing).is_none());
        for garbage in [
            &b"\x30\x80"[..],
            b"\x30\x03\x02\x01",
            b"not der",
            b"\xff\xff\xff",
        ] {
            assert!(Certificate::from_der(garbage).is_none());
        }
        // Every byte flipped: no panic, whatever parses.
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xFF;
            if let Some(cert) = Certificate::from_der(&bad) {
                let _ = (cert.alt_names(), cert.subject(), cert.public_key());
            }
        }
        assert!(pem_certificate("no certificate here").is_none());
        assert!(
            pem_certificate("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").is_none()
        );
    }

    #[test]
    fn a_malformed_name_or_alt_name_extension_is_none() {
        // An RDN that is a SEQUENCE instead of a SET.
        assert!(rfc2253(&[0x30, 0]).is_err());
        // A SAN whose GeneralNames runs past its OCTET STRING.
        let ext = [
            0x30, 0x0C, 0x30, 0x0A, 6, 3, 0x55, 0x1D, 0x11, 4, 3, 0x30, 0x05, 0x82,
        ];
        assert!(alt_names(&ext).is_err());
    }
}
