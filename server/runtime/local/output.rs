//! The captured output of one local process: a bounded buffer of chunks, oldest dropped first,
//! kept for the Logs call.

use std::collections::VecDeque;

/// Which stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One read from a process's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    /// Where it came from.
    pub stream: OutputStream,
    /// The bytes, as the process wrote them.
    pub bytes: Vec<u8>,
}

/// The most recent output of a process, at most `limit` bytes.
#[derive(Debug)]
pub struct OutputBuffer {
    chunks: VecDeque<OutputChunk>,
    size: usize,
    limit: usize,
    dropped_bytes: u64,
}

impl OutputBuffer {
    /// An empty buffer that keeps at most `limit` bytes.
    pub fn new(limit: usize) -> OutputBuffer {
        OutputBuffer { chunks: VecDeque::new(), size: 0, limit, dropped_bytes: 0 }
    }

    /// Appends output, dropping the oldest bytes beyond the limit.
    pub fn push(&mut self, stream: OutputStream, bytes: &[u8]) {
        let bytes = if bytes.len() > self.limit {
            self.dropped_bytes += (bytes.len() - self.limit) as u64;
            &bytes[bytes.len() - self.limit..]
        } else {
            bytes
        };
        if bytes.is_empty() {
            return;
        }
        self.size += bytes.len();
        self.chunks.push_back(OutputChunk { stream, bytes: bytes.to_vec() });
        while self.size > self.limit {
            let Some(oldest) = self.chunks.front_mut() else { break };
            let excess = self.size - self.limit;
            if oldest.bytes.len() <= excess {
                self.size -= oldest.bytes.len();
                self.dropped_bytes += oldest.bytes.len() as u64;
                self.chunks.pop_front();
            } else {
                oldest.bytes.drain(..excess);
                self.size -= excess;
                self.dropped_bytes += excess as u64;
            }
        }
    }

    /// The kept chunks, oldest first.
    pub fn chunks(&self) -> impl Iterator<Item = &OutputChunk> {
        self.chunks.iter()
    }

    /// How many bytes are kept.
    pub fn len(&self) -> usize {
        self.size
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// How many bytes were dropped to stay within the limit.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(buffer: &OutputBuffer) -> String {
        buffer.chunks().map(|chunk| String::from_utf8_lossy(&chunk.bytes).into_owned()).collect()
    }

    #[test]
    fn keeps_the_most_recent_bytes_within_the_limit() {
        let mut buffer = OutputBuffer::new(10);
        buffer.push(OutputStream::Stdout, b"hello ");
        buffer.push(OutputStream::Stderr, b"world");
        assert_eq!(contents(&buffer), "ello world");
        assert_eq!(buffer.len(), 10);
        assert_eq!(buffer.dropped_bytes(), 1);
        buffer.push(OutputStream::Stdout, b"0123456789abc");
        assert_eq!(contents(&buffer), "3456789abc");
        assert_eq!(buffer.dropped_bytes(), 14);
        assert!(buffer.chunks().all(|chunk| chunk.stream == OutputStream::Stdout));
    }
}
