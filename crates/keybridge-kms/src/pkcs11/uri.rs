//! The parts of RFC 7512 PKCS#11 URIs keybridge uses: `token`, `serial`,
//! `object`, `id` and `type` in the path, percent-decoded. Query attributes
//! (`pin-value`, `module-path`) are refused: PINs never travel in URIs here
//! and the module comes from the configuration.

use std::collections::HashMap;

use percent_encoding::percent_decode_str;

/// A parsed `pkcs11:` URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub object_type: Option<String>,
}

/// Percent-decodes one attribute value with `percent-encoding`, refusing a
/// malformed escape first: the crate passes one through as text
/// (`percent_decode_str("%zz")` gives `%zz`), and a typo in a key id must
/// not silently name another key.
fn pct_decode(s: &str) -> Result<Vec<u8>, String> {
    for escape in s.split('%').skip(1) {
        let hex = escape.get(..2).ok_or_else(|| format!("truncated percent escape in '{s}'"))?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad percent escape '%{hex}'"));
        }
    }
    Ok(percent_decode_str(s).collect())
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("pkcs11:").ok_or("a PKCS#11 URI starts with 'pkcs11:'")?;
        if rest.contains('?') {
            return Err("query attributes (pin-value, module-path, ...) are not accepted; set the PIN with pin_env or pin_file".into());
        }
        let mut attrs = HashMap::new();
        for part in rest.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("'{part}' is not name=value"))?;
            if attrs.insert(k.to_owned(), pct_decode(v)?).is_some() {
                return Err(format!("attribute '{k}' appears twice"));
            }
        }
        let text = |k: &str, attrs: &mut HashMap<String, Vec<u8>>| -> Result<Option<String>, String> {
            attrs
                .remove(k)
                .map(|v| String::from_utf8(v).map_err(|_| format!("'{k}' is not UTF-8")))
                .transpose()
        };
        let uri = Pkcs11Uri {
            token: text("token", &mut attrs)?,
            serial: text("serial", &mut attrs)?,
            object: text("object", &mut attrs)?,
            object_type: text("type", &mut attrs)?,
            id: attrs.remove("id"),
        };
        // Attributes that identify library or slot are accepted and ignored:
        // the configuration names the module.
        for k in ["manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer", "slot-id"] {
            attrs.remove(k);
        }
        if let Some(k) = attrs.keys().next() {
            return Err(format!("unknown attribute '{k}'"));
        }
        Ok(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_and_key() {
        let u: Pkcs11Uri = "pkcs11:token=My%20HSM;object=mk;id=%01%ff;type=secret-key".parse().unwrap();
        assert_eq!(u.token.as_deref(), Some("My HSM"));
        assert_eq!(u.object.as_deref(), Some("mk"));
        assert_eq!(u.id, Some(vec![1, 0xff]));
        assert_eq!(u.object_type.as_deref(), Some("secret-key"));
    }

    #[test]
    fn refuses_pin_in_uri_and_junk() {
        assert!("pkcs11:token=a?pin-value=1234".parse::<Pkcs11Uri>().is_err());
        assert!("pkcs:token=a".parse::<Pkcs11Uri>().is_err());
        assert!("pkcs11:token=a;bogus=1".parse::<Pkcs11Uri>().is_err());
        assert!("pkcs11:id=%zz".parse::<Pkcs11Uri>().is_err());
    }

    #[test]
    fn malformed_escapes_are_refused_not_passed_through() {
        assert_eq!(pct_decode("%41%2f%2F%00"), Ok(vec![b'A', b'/', b'/', 0]));
        assert_eq!(pct_decode("%e2%82%ac"), Ok("\u{20ac}".as_bytes().to_vec()));
        assert_eq!(pct_decode("%zz").unwrap_err(), "bad percent escape '%zz'");
        assert_eq!(pct_decode("%+1").unwrap_err(), "bad percent escape '%+1'");
        assert_eq!(pct_decode("%\u{e9}").unwrap_err(), "bad percent escape '%\u{e9}'");
        for truncated in ["%", "%4", "a%", "%4\u{e9}"] {
            assert_eq!(pct_decode(truncated).unwrap_err(), format!("truncated percent escape in '{truncated}'"));
        }
    }
}
