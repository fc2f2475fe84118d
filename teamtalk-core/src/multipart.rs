//! The file part of an msfs upload (`multipart/form-data`), read as the body arrives.
//!
//! msfs stores the first part whose `Content-Disposition` names a `filename`; everything else
//! in the body is skipped. [`FilePartReader`] is fed the body in whatever pieces the network
//! delivers and hands back the file's bytes as soon as they cannot be the start of the next
//! delimiter, so a server can stream an upload to disk holding at most one piece plus a
//! delimiter in memory. Part heads are bounded ([`MAX_HEAD`]), and so is the file
//! (`max_file`): an oversized upload is refused while it arrives, not after.
//!
//! Delimiters are `CRLF--boundary`; the body is read as if preceded by a CRLF, so the first
//! delimiter may open the body. The reader is done once the file part's closing delimiter has
//! been seen; what follows is ignored, as msfs did.

/// Longest head (the header lines of one part) that is accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// Longest boundary accepted (RFC 2046 allows 70 characters).
pub const MAX_BOUNDARY: usize = 200;

/// Why an upload body is not a usable file upload. Every variant is the client's doing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultipartError {
    /// The `boundary` of the Content-Type is empty, too long or not plain text.
    #[error("the multipart boundary is empty, too long or not plain text")]
    BadBoundary,
    /// The header lines of a part are longer than [`MAX_HEAD`].
    #[error("a part's header lines are longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// The body closed without any part naming a file.
    #[error("no part of the body names a file")]
    NoFilePart,
    /// The body ended before the file part's closing delimiter.
    #[error("the body ended inside the file part")]
    Truncated,
    /// The file is larger than allowed.
    #[error("the file is larger than {max} bytes")]
    FileTooLarge {
        /// The limit.
        max: usize,
    },
}

/// Where the reader is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (a preamble is skipped).
    Preamble,
    /// Just after a delimiter: `--` closes the body, anything else starts a part head.
    AfterDelimiter,
    /// Reading a part's header lines, up to the blank line.
    Head,
    /// Inside the file part: its bytes are handed out.
    File,
    /// Inside a part without a file name: skipped.
    Skip,
    /// The file part is complete.
    Done,
}

/// Reads the first file part of a multipart body, fed piece by piece.
#[derive(Clone, Debug)]
pub struct FilePartReader {
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    state: State,
    /// Bytes not yet decided on: at most one fed piece plus a delimiter (or a head).
    pending: Vec<u8>,
    file_name: Option<String>,
    file_len: usize,
    max_file: usize,
}

impl FilePartReader {
    /// A reader for a body with this `boundary` (the Content-Type parameter, without quotes)
    /// that refuses files larger than `max_file` bytes.
    pub fn new(boundary: &str, max_file: usize) -> Result<FilePartReader, MultipartError> {
        if boundary.is_empty()
            || boundary.len() > MAX_BOUNDARY
            || !boundary.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(MultipartError::BadBoundary);
        }
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Ok(FilePartReader {
            delimiter,
            state: State::Preamble,
            // The body is read as if it started with a CRLF: a delimiter may open it.
            pending: b"\r\n".to_vec(),
            file_name: None,
            file_len: 0,
            max_file,
        })
    }

    /// Feeds the next piece of the body; bytes of the file found so far are appended to
    /// `file`. After an error the reader must not be fed again.
    pub fn feed(&mut self, input: &[u8], file: &mut Vec<u8>) -> Result<(), MultipartError> {
        if self.state == State::Done {
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        loop {
            match self.state {
                State::Preamble | State::Skip | State::File => {
                    let Some(at) = find(&self.pending, &self.delimiter) else {
                        // Keep what could be the start of a delimiter; hand out the rest.
                        let keep = self.delimiter.len().saturating_sub(1);
                        let decided = self.pending.len().saturating_sub(keep);
                        if self.state == State::File {
                            self.take_file(decided, file)?;
                        }
                        self.pending.drain(..decided);
                        return Ok(());
                    };
                    if self.state == State::File {
                        self.take_file(at, file)?;
                        self.state = State::Done;
                        self.pending = Vec::new();
                        return Ok(());
                    }
                    self.pending.drain(..at + self.delimiter.len());
                    self.state = State::AfterDelimiter;
                }
                State::AfterDelimiter => {
                    let Some(next) = self.pending.get(..2) else {
                        return Ok(());
                    };
                    if next == b"--" {
                        return Err(MultipartError::NoFilePart);
                    }
                    self.state = State::Head;
                }
                State::Head => {
                    let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                        if self.pending.len() > MAX_HEAD {
                            return Err(MultipartError::HeadTooLong);
                        }
                        return Ok(());
                    };
                    if end > MAX_HEAD {
                        return Err(MultipartError::HeadTooLong);
                    }
                    let head = String::from_utf8_lossy(self.pending.get(..end).unwrap_or_default());
                    self.file_name = file_name(&head);
                    self.state = if self.file_name.is_some() {
                        State::File
                    } else {
                        State::Skip
                    };
                    // The part's content follows the blank line; the delimiter after it
                    // begins with the CRLF that ends the content.
                    self.pending.drain(..end + 4);
                }
                State::Done => return Ok(()),
            }
        }
    }

    /// The file name the client gave (its last path component), once the file part's head
    /// has been read.
    pub fn file_name(&self) -> Option<&str> {
        self.file_name.as_deref()
    }

    /// Whether the file part is complete (its closing delimiter was seen).
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// To be called at the end of the body: the file name when the file part is complete.
    pub fn finish(&self) -> Result<&str, MultipartError> {
        match (self.state, self.file_name.as_deref()) {
            (State::Done, Some(name)) => Ok(name),
            (State::File, _) => Err(MultipartError::Truncated),
            _ => Err(MultipartError::NoFilePart),
        }
    }

    /// Hands the first `n` pending bytes to `file`, minding the size limit.
    fn take_file(&mut self, n: usize, file: &mut Vec<u8>) -> Result<(), MultipartError> {
        self.file_len = self.file_len.saturating_add(n);
        if self.file_len > self.max_file {
            return Err(MultipartError::FileTooLarge { max: self.max_file });
        }
        file.extend_from_slice(self.pending.get(..n).unwrap_or_default());
        Ok(())
    }
}

/// The `filename="…"` of a part's head (only its last path component), if any.
fn file_name(head: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let lower = line.to_ascii_lowercase();
        if !lower.starts_with("content-disposition:") {
            return None;
        }
        let at = lower.find("filename=\"")? + "filename=\"".len();
        let value = line.get(at..)?;
        let name = value.get(..value.find('"')?)?;
        Some(
            name.rsplit(['/', '\\'])
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    })
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(offset) = haystack.get(from..)?.iter().position(|&b| b == first) {
        let at = from + offset;
        let end = at + needle.len();
        if haystack.get(at + 1..end)? == rest {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use proptest::prelude::*;

    use super::*;

    const BODY: &[u8] =
        b"--XY\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue\r\n--XY\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"dir/pic_640x480.jpg\"\r\n\
Content-Type: image/jpeg\r\n\r\n\x00\x01\r\nbytes\r\n--X\r\n--XY--\r\n";
    const FILE: &[u8] = b"\x00\x01\r\nbytes\r\n--X";

    /// Feeds `body` in pieces of `size` bytes: the file bytes and the final result.
    fn read(
        body: &[u8],
        size: usize,
        max_file: usize,
    ) -> (Vec<u8>, Result<String, MultipartError>) {
        let mut reader = FilePartReader::new("XY", max_file).unwrap();
        let mut file = Vec::new();
        for piece in body.chunks(size.max(1)) {
            if let Err(error) = reader.feed(piece, &mut file) {
                return (file, Err(error));
            }
        }
        let result = reader.finish().map(str::to_owned);
        (file, result)
    }

    #[test]
    fn the_first_file_part_in_any_piece_size() {
        for size in 1..=BODY.len() {
            let (file, name) = read(BODY, size, 1 << 20);
            assert_eq!(name.as_deref(), Ok("pic_640x480.jpg"), "pieces of {size}");
            assert_eq!(file, FILE, "pieces of {size}");
        }
    }

    #[test]
    fn empty_files_and_a_delimiter_opening_the_body() {
        let body = b"--XY\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.gif\"\r\n\r\n\r\n--XY--\r\n";
        for size in 1..=body.len() {
            let (file, name) = read(body, size, 10);
            assert_eq!((file.as_slice(), name.as_deref()), (&b""[..], Ok("a.gif")));
        }
        let preamble = b"ignored preamble\r\n--XY\r\nContent-Disposition: form-data; filename=\"b.png\"\r\n\r\nPNG\r\n--XY--";
        let (file, name) = read(preamble, 3, 10);
        assert_eq!(
            (file.as_slice(), name.as_deref()),
            (&b"PNG"[..], Ok("b.png"))
        );
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(
            read(b"--XY--\r\n", 4, 10).1,
            Err(MultipartError::NoFilePart)
        );
        assert_eq!(read(b"garbage", 2, 10).1, Err(MultipartError::NoFilePart));
        let truncated = &BODY[..BODY.len() - 20];
        assert_eq!(
            read(truncated, 7, 1 << 20).1,
            Err(MultipartError::Truncated)
        );
        let (file, result) = read(BODY, 5, 4);
        assert_eq!(result, Err(MultipartError::FileTooLarge { max: 4 }));
        assert!(file.len() <= 4, "nothing past the limit is handed out");
        let mut long_head = b"--XY\r\nX-Pad: ".to_vec();
        long_head.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert_eq!(
            read(&long_head, 1000, 10).1,
            Err(MultipartError::HeadTooLong)
        );
        for bad in ["", "a\u{7f}b", &"x".repeat(MAX_BOUNDARY + 1)] {
            assert_eq!(
                FilePartReader::new(bad, 1).unwrap_err(),
                MultipartError::BadBoundary
            );
        }
    }

    #[test]
    fn memory_held_is_one_piece_plus_a_delimiter() {
        let mut reader = FilePartReader::new("XY", usize::MAX).unwrap();
        let mut file = Vec::new();
        reader
            .feed(
                b"--XY\r\nContent-Disposition: form-data; filename=\"a.bin\"\r\n\r\n",
                &mut file,
            )
            .unwrap();
        let piece = vec![7u8; 64 * 1024];
        for _ in 0..100 {
            file.clear();
            reader.feed(&piece, &mut file).unwrap();
            assert!(reader.pending.len() < piece.len() + reader.delimiter.len());
        }
        assert_eq!(reader.file_name(), Some("a.bin"));
        assert!(!reader.is_complete());
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_and_pieces_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            size in 1usize..64,
        ) {
            let _ = read(&body, size, 100);
        }

        #[test]
        fn any_file_survives_any_chunking(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            size in 1usize..300,
        ) {
            // A file that contains the boundary text but not a whole delimiter.
            let mut body = b"--XY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"1.audio\"\r\n\r\n".to_vec();
            let data: Vec<u8> = data.into_iter().filter(|&b| b != b'\n').collect();
            body.extend_from_slice(&data);
            body.extend_from_slice(b"\r\n--XY--\r\n");
            let (file, name) = read(&body, size, usize::MAX);
            prop_assert_eq!(name.as_deref(), Ok("1.audio"));
            prop_assert_eq!(file, data);
        }
    }
}
