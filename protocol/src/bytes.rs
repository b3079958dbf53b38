//! Primitive encodings shared by every canonical format (SPEC.md §1): little-endian integers,
//! length-prefixed strings and bytes, and a bounds-checked reader that never allocates more
//! than the input could hold.

/// Why bytes are not a canonical node body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported format version {0}")]
    FormatVersion(u8),
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("unsupported body version {0} (this tapes reads version {v})", v = crate::canonical::BODY_VERSION)]
    Version(u8),
    #[error("unknown {what} tag {tag:#04x} at offset {offset}")]
    UnknownTag {
        what: &'static str,
        tag: u8,
        offset: usize,
    },
    #[error("invalid UTF-8 in a string at offset {0}")]
    Utf8(usize),
    #[error("unknown role `{0}`")]
    Role(String),
    #[error("{0} is not canonical JSON")]
    NonCanonicalJson(&'static str),
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
}

pub(crate) fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Bodies are far below 4 GiB; a longer field would be a bug upstream, not input.
    let n = u32::try_from(n).expect("field longer than 4 GiB");
    out.extend_from_slice(&n.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

pub(crate) fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl Reader<'_> {
    pub(crate) fn need(&self, n: usize) -> Result<(), DecodeError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - left,
            });
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        self.need(n)?;
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn tag(&mut self, what: &'static str, allowed: &[u8]) -> Result<u8, DecodeError> {
        let offset = self.pos;
        let tag = self.u8()?;
        if allowed.contains(&tag) {
            Ok(tag)
        } else {
            Err(DecodeError::UnknownTag { what, tag, offset })
        }
    }

    pub(crate) fn u32(&mut self) -> Result<usize, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32()?;
        Ok(self.take(len)?.to_vec())
    }

    pub(crate) fn str(&mut self) -> Result<String, DecodeError> {
        let offset = self.pos;
        let len = self.u32()?;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8(offset))
    }
}

impl Reader<'_> {
    pub(crate) fn new(bytes: &[u8]) -> Reader<'_> {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(match self.tag("option flag", &[0, 1])? {
            0 => None,
            _ => Some(self.str()?),
        })
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos != self.bytes.len() {
            return Err(DecodeError::Trailing(self.bytes.len() - self.pos));
        }
        Ok(())
    }
}
