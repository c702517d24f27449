//! The parts of RFC 7512 PKCS#11 URIs keybridge uses: `token`, `serial`,
//! `object`, `id` and `type` in the path, percent-decoded. Query attributes
//! (`pin-value`, `module-path`) are refused: PINs never travel in URIs here
//! and the module comes from the configuration.

use std::collections::HashMap;

/// A parsed `pkcs11:` URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub object_type: Option<String>,
}

fn pct_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("truncated percent escape in '{s}'"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad percent escape '%{hex}'"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
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
}
