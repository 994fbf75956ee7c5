//! The peer certificate's names as Envoy's RBAC matches `authenticated.principal_name`
//! (source/extensions/filters/common/rbac/matchers.cc): every URI SAN, then every DNS SAN,
//! then the subject. Envoy's `connection.uri_san_peer_certificate` attribute holds only the
//! first URI SAN, so the names are read from the whole certificate
//! (`connection.peer_certificate`, URL-encoded PEM).

use percent_encoding::percent_decode_str;

use crate::x509::{pem_certificate, Certificate};

/// The names in Envoy's order; `None` when the text is not a certificate.
pub fn peer_names(url_encoded_pem: &str) -> Option<Vec<String>> {
    let pem = percent_decode_str(url_encoded_pem).decode_utf8().ok()?;
    let der = pem_certificate(&pem)?;
    let cert = Certificate::from_der(&der)?;
    // Envoy reads a subjectAltName it cannot parse as no names (`X509_get_ext_d2i`).
    let alt = cert.alt_names().unwrap_or_default();
    let mut names = alt.uris;
    names.extend(alt.dns);
    names.push(cert.subject()?);
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/O=acme/CN=web'
    /// -addext 'subjectAltName=URI:spiffe://td,URI:spiffe://cluster.local/ns/app/sa/web,DNS:web.app'
    const CERT: &str = include_str!("../../tests/fixtures/peer-sans.pem");

    #[test]
    fn names_are_every_uri_san_then_every_dns_san_then_the_subject_as_envoy_rbac() {
        let encoded: String =
            percent_encoding::utf8_percent_encode(CERT, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        assert_eq!(
            peer_names(&encoded),
            Some(vec![
                "spiffe://td".to_string(),
                "spiffe://cluster.local/ns/app/sa/web".to_string(),
                "web.app".to_string(),
                "CN=web,O=acme".to_string(),
            ])
        );
    }

    #[test]
    fn text_that_is_not_a_certificate_has_no_names() {
        assert_eq!(peer_names("not%20a%20certificate"), None);
    }
}
