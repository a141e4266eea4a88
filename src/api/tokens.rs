//! Who may do what through the API: named tokens, each with scopes.
//!
//! `LANES_TOKENS_FILE` lists them, one per line: a name, its scopes (comma separated), and the
//! SHA-256 of the token (`lanes token new NAME --scopes …` makes a token and prints its line),
//! so the file holds no secret; the server reads it again on SIGHUP (a file that does not
//! parse keeps the tokens it had). `LANES_API_TOKEN` stays as one token named `admin` with
//! every scope. Without either, the API is open, as before.
//!
//! | scope | lets its holder |
//! |---|---|
//! | `submit` | `POST /jobs` |
//! | `read` | read jobs, workers and lanes when `LANES_PROTECT_READS` is on |
//! | `operate` | cancel and retry jobs, drain workers |
//! | `execute` | report on jobs as an executor (`PATCH /jobs/{id}`) |
//! | `admin` | everything |
//!
//! A token is compared by its hash, in constant time against every entry.

use sha2::{Digest, Sha256};
use std::{collections::BTreeSet, fmt, path::Path, str::FromStr};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Submit,
    Read,
    Operate,
    Execute,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Submit,
        Scope::Read,
        Scope::Operate,
        Scope::Execute,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Execute => "execute",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope `{s}` (scopes: {})", known.join(", "))
            })
    }
}

/// One named token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    scopes: BTreeSet<Scope>,
    hash: [u8; 32],
}

impl Holder {
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("tokens file, line {line}: {reason}")]
    Line { line: usize, reason: String },
}

/// The tokens the API knows.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    holders: Vec<Holder>,
}

/// `sha256:<hex>` of a token, as the tokens file holds it.
pub fn hash_line(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Parses a tokens file's text: `name scopes sha256:<hex>` per line, `#` comments.
    pub fn parse(text: &str) -> Result<Tokens, TokensError> {
        let mut holders: Vec<Holder> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let bad = |reason: String| TokensError::Line {
                line: line_no,
                reason,
            };
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let [name, scopes, hash] = words[..] else {
                return Err(bad("expected `name scopes sha256:<hex>`".to_owned()));
            };
            let scopes = scopes
                .split(',')
                .map(str::parse)
                .collect::<Result<BTreeSet<Scope>, String>>()
                .map_err(bad)?;
            let hash = parse_hash(hash)
                .ok_or_else(|| bad("the hash must be `sha256:` and 64 hex digits".to_owned()))?;
            if holders.iter().any(|h| h.name == name) {
                return Err(bad(format!(
                    "the name `{name}` is taken by an earlier line"
                )));
            }
            holders.push(Holder {
                name: name.to_owned(),
                scopes,
                hash,
            });
        }
        Ok(Tokens { holders })
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Tokens::parse(&text)
    }

    /// Adds `LANES_API_TOKEN` as the token `admin`.
    pub fn with_admin(mut self, token: Option<&str>) -> Tokens {
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let hash = Sha256::digest(token.as_bytes()).into();
            self.holders.retain(|h| h.name != "admin");
            self.holders.push(Holder {
                name: "admin".to_owned(),
                scopes: BTreeSet::from([Scope::Admin]),
                hash,
            });
        }
        self
    }

    /// No token at all: the API is open.
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    pub fn len(&self) -> usize {
        self.holders.len()
    }

    /// The holder of `token`, if it is one of these. Every entry is compared, in constant time.
    pub fn holder(&self, token: &str) -> Option<&Holder> {
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for h in &self.holders {
            if bool::from(h.hash.ct_eq(&given)) {
                found = Some(h);
            }
        }
        found
    }
}

/// A fresh token: 32 random bytes, hex, with a prefix that says what it is.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("lanes_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_names_tokens_and_their_scopes_by_hash() {
        let (ci, ops) = ("token-of-ci", "token-of-ops");
        let text = format!(
            "# who may do what\nci submit,read {}\n\nops  read,operate   {}  # on call\n",
            hash_line(ci),
            hash_line(ops)
        );
        let tokens = Tokens::parse(&text).unwrap().with_admin(Some("root-token"));
        assert_eq!(tokens.len(), 3);
        let ci = tokens.holder(ci).unwrap();
        assert_eq!(ci.name, "ci");
        assert!(ci.may(Scope::Submit) && ci.may(Scope::Read) && !ci.may(Scope::Operate));
        let ops = tokens.holder(ops).unwrap();
        assert!(ops.may(Scope::Operate) && !ops.may(Scope::Submit));
        let admin = tokens.holder("root-token").unwrap();
        assert!(Scope::ALL.iter().all(|s| admin.may(*s)));
        assert!(tokens.holder("nobody").is_none());
        assert!(Tokens::default().is_empty());
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let h = hash_line("x");
        for (text, why) in [
            ("ci submit\n".to_owned(), "expected"),
            (format!("ci submit,write {h}\n"), "unknown scope `write`"),
            ("ci submit sha256:abc\n".to_owned(), "64 hex digits"),
            (format!("ci submit {h}\nci read {h}\n"), "taken"),
        ] {
            let e = Tokens::parse(&text).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("line"), "{text}: {e}");
        }
    }

    #[test]
    fn new_tokens_differ_and_hash_to_a_line_the_file_takes() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("lanes_") && a.len() == 70);
        let tokens = Tokens::parse(&format!("a submit {}", hash_line(&a))).unwrap();
        assert_eq!(tokens.holder(&a).unwrap().name, "a");
    }
}
