//! `Path`: where a value sits inside a document.
//!
//! A path is a list of segments from the document root. The string form is a JSON Pointer
//! (RFC 6901): `/todos/0/title`, with `~1` for a `/` and `~0` for a `~` inside a key; the
//! leading `/` may be left out. A segment is resolved against what is actually there: against a
//! map it is a key, against a list or text it must be an index. So `items/0` addresses the
//! first element if `items` is a list, and the key `"0"` if it is a map.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// One step of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A map key (or, against a list, a decimal index).
    Key(String),
    /// A list or text index (or, against a map, the key with these digits).
    Index(usize),
}

impl Segment {
    /// The segment as a map key.
    pub fn as_key(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Key(k) => k.into(),
            Self::Index(i) => i.to_string().into(),
        }
    }

    /// The segment as a list index, if it is one.
    pub fn as_index(&self) -> Option<usize> {
        match self {
            Self::Key(k) => k.parse().ok(),
            Self::Index(i) => Some(*i),
        }
    }
}

/// A location inside a document; the empty path is the root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Path(Vec<Segment>);

impl Path {
    /// The root of the document.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended by a map key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(Segment::Key(key.into()));
        self
    }

    /// This path extended by a list index.
    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Segment::Index(index));
        self
    }

    /// The segments, root first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// True for the root path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Splits into the parent path and the last segment; `None` for the root.
    pub fn split_last(&self) -> Option<(Path, &Segment)> {
        let (last, parent) = self.0.split_last()?;
        Some((Path(parent.to_vec()), last))
    }

    /// Parses the JSON Pointer form.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for a `~` escape other than `~0` or `~1`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let body = s.strip_prefix('/').unwrap_or(s);
        if body.is_empty() {
            return Ok(Self::root());
        }
        body.split('/')
            .map(|raw| unescape(raw).map(Segment::Key))
            .collect::<Option<Vec<_>>>()
            .map(Self)
            .ok_or_else(|| Error::InvalidPath {
                path: s.to_owned(),
                reason: "'~' must be followed by 0 or 1".to_owned(),
            })
    }
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next()? {
                '0' => out.push('~'),
                '1' => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for seg in &self.0 {
            f.write_str("/")?;
            f.write_str(&seg.as_key().replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

impl FromStr for Path {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// Anything that names a path: a [`Path`], or a string in JSON Pointer form.
pub trait IntoPath {
    /// Converts to a [`Path`].
    ///
    /// # Errors
    /// [`Error::InvalidPath`] when a string is not a valid pointer.
    fn into_path(self) -> Result<Path, Error>;
}

impl IntoPath for Path {
    fn into_path(self) -> Result<Path, Error> {
        Ok(self)
    }
}

impl IntoPath for &Path {
    fn into_path(self) -> Result<Path, Error> {
        Ok(self.clone())
    }
}

impl IntoPath for &str {
    fn into_path(self) -> Result<Path, Error> {
        Path::parse(self)
    }
}

impl IntoPath for &String {
    fn into_path(self) -> Result<Path, Error> {
        Path::parse(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_pointers() {
        let p = Path::parse("/a/0/b~1c~0d").expect("valid");
        assert_eq!(
            p.segments(),
            &[
                Segment::Key("a".into()),
                Segment::Key("0".into()),
                Segment::Key("b/c~d".into())
            ]
        );
        assert_eq!(p.to_string(), "/a/0/b~1c~0d");
        assert_eq!(
            Path::parse("a/b").expect("valid"),
            Path::root().key("a").key("b")
        );
        assert!(Path::parse("").expect("valid").is_root());
        assert!(Path::parse("/").expect("valid").is_root());
        assert!(Path::parse("a~2").is_err());
    }
}
