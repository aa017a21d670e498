//! The `[tls]` section: the certificate and key files, and whether plain
//! HTTP is refused. The files are read by the load step.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, Located, Source};

/// `[tls]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    require: Option<Spanned<bool>>,
}

/// `[tls]` checked: which files to load, not yet loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, as written (relative to the config's folder).
    pub cert: Located<PathBuf>,
    /// PEM private key, as written.
    pub key: Located<PathBuf>,
    /// Refuse every peer that does not speak TLS.
    pub require: bool,
}

/// Checks `[tls]`: both files or neither, and `require` only with both.
/// An absent section, or one naming no files, is no TLS.
pub(super) fn parse_tls(raw: Option<&RawTls>, src: &Source) -> Result<Option<TlsFiles>, ConfigError> {
    let Some(t) = raw else { return Ok(None) };
    let require = t.require.as_ref().is_some_and(|r| *r.get_ref());
    let path = |p: &Spanned<String>, what: &str| {
        if p.get_ref().is_empty() {
            return Err(src.error(p.span(), format!("{what} must not be empty")));
        }
        Ok(Located {
            value: PathBuf::from(p.get_ref()),
            line: src.line(&p.span()),
        })
    };
    match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Ok(Some(TlsFiles {
            cert: path(c, "cert")?,
            key: path(k, "key")?,
            require,
        })),
        (None, None) if require => {
            let span = t.require.as_ref().map_or(0..0, |r| r.span());
            Err(src.error(span, "require = true needs a certificate: set cert and key"))
        }
        (None, None) => Ok(None),
        (Some(c), None) => Err(src.error(c.span(), "cert is set but key is not")),
        (None, Some(k)) => Err(src.error(k.span(), "key is set but cert is not")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::section;

    fn parse(body: &str) -> Result<Option<TlsFiles>, String> {
        section(&format!("[tls]\n{body}"), "tls", parse_tls)
    }

    #[test]
    fn absent_or_empty_is_no_tls() {
        assert_eq!(section("", "tls", parse_tls), Ok(None));
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("require = false\n"), Ok(None));
    }

    #[test]
    fn files_keep_their_paths_and_lines_unread() {
        let tls = parse("cert = \"/nonexistent/c.pem\"\nkey = \"k.pem\"\nrequire = true\n").expect("valid");
        assert_eq!(
            tls,
            Some(TlsFiles {
                cert: Located {
                    value: PathBuf::from("/nonexistent/c.pem"),
                    line: 2
                },
                key: Located {
                    value: PathBuf::from("k.pem"),
                    line: 3
                },
                require: true,
            })
        );
    }

    #[test]
    fn half_a_pair_or_require_alone_is_refused() {
        assert_eq!(
            parse("require = true\n"),
            Err("test.toml:2: require = true needs a certificate: set cert and key".into())
        );
        assert_eq!(
            parse("cert = \"c.pem\"\n"),
            Err("test.toml:2: cert is set but key is not".into())
        );
        assert_eq!(
            parse("\nkey = \"k.pem\"\n"),
            Err("test.toml:3: key is set but cert is not".into())
        );
        assert_eq!(
            parse("cert = \"c.pem\"\nkey = \"\"\n"),
            Err("test.toml:3: key must not be empty".into())
        );
    }
}
