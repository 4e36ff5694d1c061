//! Reading the SNI name of a TLS ClientHello without terminating TLS: the scheduler proxy's
//! classifier. This parses network input from anyone, so it never panics, never allocates more
//! than the bytes it is given and reports a prefix of a valid ClientHello as
//! [`Hello::Incomplete`].
//!
//! Handshake messages may be split over several TLS records (RFC 8446 5.1); the ClientHello is
//! reassembled from consecutive handshake records up to [`MAX_HELLO_BYTES`].

/// Largest ClientHello (handshake message body) accepted.
pub const MAX_HELLO_BYTES: usize = 32 * 1024;
/// Largest TLS plaintext record (2^14).
const MAX_RECORD: usize = 16 * 1024;
/// TLS content type of handshake records.
pub const HANDSHAKE: u8 = 0x16;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A prefix of a ClientHello: read more.
    Incomplete,
    /// Not a TLS handshake at all (e.g. HTTP).
    NotTls,
    /// TLS, but not a well-formed ClientHello (the reason).
    Invalid(&'static str),
    /// A complete ClientHello and its `host_name` server name, if it has one.
    ClientHello {
        /// The SNI `host_name`.
        sni: Option<String>,
    },
}

/// Classifies the first bytes of a connection.
pub fn parse(buf: &[u8]) -> Hello {
    if buf.is_empty() {
        return Hello::Incomplete;
    }
    if buf[0] != HANDSHAKE {
        return Hello::NotTls;
    }
    let mut handshake: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    loop {
        let Some(header) = buf.get(pos..pos + 5) else {
            return Hello::Incomplete;
        };
        if header[0] != HANDSHAKE {
            return Hello::Invalid("ClientHello interrupted by a non-handshake record");
        }
        if header[1] != 3 {
            return Hello::Invalid("not a TLS record version");
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Hello::Invalid("bad TLS record length");
        }
        let Some(fragment) = buf.get(pos + 5..pos + 5 + len) else {
            return Hello::Incomplete;
        };
        handshake.extend_from_slice(fragment);
        pos += 5 + len;
        if handshake.len() < 4 {
            continue;
        }
        if handshake[0] != 1 {
            return Hello::Invalid("first handshake message is not a ClientHello");
        }
        let body_len = (usize::from(handshake[1]) << 16)
            | (usize::from(handshake[2]) << 8)
            | usize::from(handshake[3]);
        if body_len > MAX_HELLO_BYTES {
            return Hello::Invalid("ClientHello too large");
        }
        if let Some(body) = handshake.get(4..4 + body_len) {
            return match client_hello_sni(body) {
                Ok(sni) => Hello::ClientHello { sni },
                Err(why) => Hello::Invalid(why),
            };
        }
    }
}

/// A cursor over a byte slice; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("ClientHello truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

/// The `host_name` of the server_name extension of a ClientHello body.
fn client_hello_sni(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader(body);
    let version = r.take(2)?;
    if version[0] != 3 {
        return Err("bad ClientHello version");
    }
    r.take(32)?; // random
    let session_id = usize::from(r.u8()?);
    if session_id > 32 {
        return Err("session id too long");
    }
    r.take(session_id)?;
    let suites = r.u16()?;
    if suites < 2 || suites % 2 != 0 {
        return Err("bad cipher suite list");
    }
    r.take(suites)?;
    let compressions = usize::from(r.u8()?);
    if compressions < 1 {
        return Err("empty compression method list");
    }
    r.take(compressions)?;
    if r.0.is_empty() {
        return Ok(None); // no extensions
    }
    let ext_len = r.u16()?;
    if ext_len != r.0.len() {
        return Err("extension block length mismatch");
    }
    let mut sni = None;
    while !r.0.is_empty() {
        let ext_type = r.u16()?;
        let len = r.u16()?;
        let data = r.take(len)?;
        if ext_type == 0 {
            if sni.is_some() {
                return Err("duplicate server_name extension");
            }
            sni = Some(server_name(data)?);
        }
    }
    Ok(sni.flatten())
}

/// The `host_name` entry of a server_name extension (RFC 6066 3).
fn server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader(data);
    let list = r.u16()?;
    if list != r.0.len() {
        return Err("server_name list length mismatch");
    }
    let mut host = None;
    while !r.0.is_empty() {
        let kind = r.u8()?;
        let len = r.u16()?;
        let name = r.take(len)?;
        if kind == 0 && host.is_none() {
            if name.is_empty()
                || !name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                return Err("server name is not a host name");
            }
            host = Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(host)
}

#[cfg(test)]
mod tests;
