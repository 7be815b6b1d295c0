//! A local process's output on disk: bounded by size, kept across the memory buffer's evictions,
//! readable by any number of readers while it is written and rotated.
//!
//! # Where
//!
//! `runtime.log_dir` holds one directory per server run, `run-<pid>` (mode 0700), so that two
//! servers sharing a `log_dir` never touch each other's files; at start-up a server removes the
//! `run-<pid>` directories whose server is no longer alive (its own pid included: that one is a
//! dead server's whose pid was reused). Inside, each process has a directory `<name>.<n>`, `n`
//! counting the processes of this run, so a process started again under the same name never
//! reads the output of the one before (names are DNS labels, without dots: the two parts cannot
//! be confused). Beside them, `work` holds the processes' own working directories, and the file
//! `cgroup` names the run's cgroup (module `cgroup`), which a dead server's successor kills before
//! it removes the run directory.
//!
//! # Format
//!
//! A process's directory holds at most two segment files, `output` (being written) and
//! `output.1` (the one before). Each is a sequence of records, each a 21-byte header then the
//! data:
//!
//! | bytes | field                                                                    |
//! |-------|--------------------------------------------------------------------------|
//! | 8     | global offset of the first data byte (bytes written before, both streams), u64 LE |
//! | 8     | when the bytes were read, nanoseconds since the Unix epoch, i64 LE       |
//! | 1     | stream: 1 stdout, 2 stderr                                               |
//! | 4     | data length, u32 LE, at most [`MAX_RECORD_DATA`]                         |
//!
//! Offsets are those of the memory buffer (`output`), so a reader moves between the two by
//! offset. When the next record would take `output` over half of `max_log_bytes`, `output` is
//! renamed over `output.1` and a new `output` begun: the disk holds at most `max_log_bytes`, and
//! after the first rotation at least half of it less one record (headers included). Records are
//! at most a quarter of a segment, so a record always fits.
//!
//! # Reading
//!
//! A reader opens both files once ([`SegmentSnapshot`]) and reads by position; an open file stays
//! readable after it is renamed or removed. A rotation between opening the two files can make
//! both handles name the same file (detected by inode) or leave out a newer one; records are
//! therefore taken in offset order, skipping any offset already passed (no duplicate), and a
//! reader that finds nothing at its offset opens the files again (no loss short of what rotation
//! removed). A record cut short (being written, or a full disk) ends its file for the reader.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::output::OutputStream;

/// The bytes of a record's header.
pub const HEADER_BYTES: usize = 8 + 8 + 1 + 4;

/// The most data one record holds: one read of a pipe.
pub const MAX_RECORD_DATA: usize = 64 * 1024;

/// The segment being written.
pub const CURRENT_SEGMENT: &str = "output";

/// The segment before it.
pub const PREVIOUS_SEGMENT: &str = "output.1";

/// How much a reader reads at once: a whole record of the largest size always fits.
const READ_BLOCK: usize = 2 * (HEADER_BYTES + MAX_RECORD_DATA);

/// One write of a process, as kept on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The global offset of its first byte.
    pub offset: u64,
    /// When it was read.
    pub time: jiff::Timestamp,
    /// Which stream.
    pub stream: OutputStream,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Record {
    /// The global offset just past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// A record's header as written.
fn encode_header(
    offset: u64,
    time: jiff::Timestamp,
    stream: OutputStream,
    length: u32,
) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&offset.to_le_bytes());
    // Nanoseconds since the epoch fit an i64 until 2262; later times are clamped.
    let nanos = i64::try_from(time.as_nanosecond()).unwrap_or(i64::MAX);
    header[8..16].copy_from_slice(&nanos.to_le_bytes());
    header[16] = match stream {
        OutputStream::Stdout => 1,
        OutputStream::Stderr => 2,
    };
    header[17..21].copy_from_slice(&length.to_le_bytes());
    header
}

/// The header at the start of `bytes`: offset, time, stream and data length; `None` when it is
/// not a header (too short, or a stream or length no writer makes).
fn decode_header(bytes: &[u8]) -> Option<(u64, jiff::Timestamp, OutputStream, usize)> {
    let header: &[u8; HEADER_BYTES] = bytes.get(..HEADER_BYTES)?.try_into().ok()?;
    let offset = u64::from_le_bytes(header[0..8].try_into().ok()?);
    let nanos = i64::from_le_bytes(header[8..16].try_into().ok()?);
    let stream = match header[16] {
        1 => OutputStream::Stdout,
        2 => OutputStream::Stderr,
        _ => return None,
    };
    let length = u32::from_le_bytes(header[17..21].try_into().ok()?) as usize;
    if length > MAX_RECORD_DATA {
        return None;
    }
    let time = jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok()?;
    Some((offset, time, stream, length))
}

/// Creates a directory of this user's only (mode 0700), and its missing parents.
pub fn create_private_directory(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Makes a process's own working directory (mode 0700), owned by the user it runs as; one left
/// by an earlier run of the process is used again.
pub fn create_working_directory(path: &Path, user: Option<&super::supervisor::RunAs>) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    if let Some(user) = user {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))?;
    }
    Ok(())
}

// === impl SegmentWriter ===

/// Appends a process's output to its two segment files, rotating them to stay within the bound.
#[derive(Debug)]
pub struct SegmentWriter {
    directory: PathBuf,
    /// The most bytes one segment file holds: half the bound.
    segment_limit: u64,
    /// The most data one record holds.
    record_limit: usize,
    /// The segment being written, opened at the first write.
    current: Option<File>,
    /// Its size.
    current_bytes: u64,
    /// The record being framed: one write per record.
    scratch: Vec<u8>,
}

impl SegmentWriter {
    /// A writer of the segments in `directory` (made at the first write), within `max_log_bytes`
    /// (at least 64 KiB, as the settings ensure).
    pub fn new(directory: PathBuf, max_log_bytes: u64) -> SegmentWriter {
        let segment_limit = (max_log_bytes / 2).max(4 * HEADER_BYTES as u64 + 4);
        let record_limit = usize::try_from(segment_limit / 4)
            .unwrap_or(usize::MAX)
            .saturating_sub(HEADER_BYTES)
            .clamp(1, MAX_RECORD_DATA);
        SegmentWriter {
            directory,
            segment_limit,
            record_limit,
            current: None,
            current_bytes: 0,
            scratch: Vec::new(),
        }
    }

    /// Appends bytes read at `time` whose first byte has global offset `offset`, as records of at
    /// most the record limit.
    pub fn append(
        &mut self,
        offset: u64,
        time: jiff::Timestamp,
        stream: OutputStream,
        data: &[u8],
    ) -> io::Result<()> {
        let mut offset = offset;
        for piece in data.chunks(self.record_limit) {
            self.write_record(offset, time, stream, piece)?;
            offset += piece.len() as u64;
        }
        Ok(())
    }

    fn write_record(
        &mut self,
        offset: u64,
        time: jiff::Timestamp,
        stream: OutputStream,
        data: &[u8],
    ) -> io::Result<()> {
        let size = (HEADER_BYTES + data.len()) as u64;
        if self.current.is_none() {
            create_private_directory(&self.directory)?;
            self.current = Some(self.open_current()?);
        } else if self.current_bytes > 0 && self.current_bytes + size > self.segment_limit {
            // Readers holding the previous `output.1` keep reading it through their handle.
            std::fs::rename(self.directory.join(CURRENT_SEGMENT), self.directory.join(PREVIOUS_SEGMENT))?;
            self.current = Some(self.open_current()?);
        }
        let Some(file) = self.current.as_mut() else { return Ok(()) };
        self.scratch.clear();
        // At most MAX_RECORD_DATA bytes: the length fits a u32.
        self.scratch.extend_from_slice(&encode_header(offset, time, stream, data.len() as u32));
        self.scratch.extend_from_slice(data);
        file.write_all(&self.scratch)?;
        self.current_bytes += size;
        Ok(())
    }

    fn open_current(&mut self) -> io::Result<File> {
        self.current_bytes = 0;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.directory.join(CURRENT_SEGMENT))
    }
}

// === impl SegmentSnapshot ===

/// A process's segment files as they were when opened, oldest first.
#[derive(Debug, Default)]
pub struct SegmentSnapshot {
    segments: Vec<Segment>,
}

#[derive(Debug)]
struct Segment {
    file: File,
    /// The global offset of its first record.
    first: u64,
}

/// Where the last read of a snapshot ended, so that reading on from there does not scan again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadHint {
    segment: usize,
    position: u64,
    /// The global offset of the record at `position`.
    offset: u64,
}

impl SegmentSnapshot {
    /// Opens the segments in `directory`; missing or empty ones are left out.
    pub fn open(directory: &Path) -> io::Result<SegmentSnapshot> {
        let mut segments = Vec::with_capacity(2);
        let mut inodes = Vec::with_capacity(2);
        // The current segment first: a rotation in between then names it twice (removed below)
        // rather than hiding it.
        for name in [CURRENT_SEGMENT, PREVIOUS_SEGMENT] {
            let file = match File::open(directory.join(name)) {
                Ok(file) => file,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            let metadata = file.metadata()?;
            let inode = (metadata.dev(), metadata.ino());
            if inodes.contains(&inode) {
                continue;
            }
            let mut header = [0u8; HEADER_BYTES];
            if read_full_at(&file, &mut header, 0)? < HEADER_BYTES {
                continue;
            }
            let Some((first, ..)) = decode_header(&header) else { continue };
            inodes.push(inode);
            segments.push(Segment { file, first });
        }
        segments.sort_by_key(|segment| segment.first);
        Ok(SegmentSnapshot { segments })
    }

    /// The global offset of the oldest record, if any.
    pub fn first_offset(&self) -> Option<u64> {
        self.segments.first().map(|segment| segment.first)
    }

    /// The records that end after `from`, in offset order, from the one holding `from` (or the
    /// first after it), until about `max_bytes` of data or a gap in offsets; empty when the
    /// snapshot has nothing after `from`. `hint` makes reading on from the last read's end cheap.
    pub fn read(&self, from: u64, max_bytes: usize, hint: &mut ReadHint) -> io::Result<Vec<Record>> {
        let (first_segment, mut position) = if hint.offset == from && hint.segment < self.segments.len() {
            (hint.segment, hint.position)
        } else {
            let index = self.segments.partition_point(|segment| segment.first <= from).saturating_sub(1);
            (index, 0)
        };
        let mut records = Vec::new();
        let mut wanted = from;
        let mut taken = 0;
        let mut block = vec![0u8; READ_BLOCK];
        for (index, segment) in self.segments.iter().enumerate().skip(first_segment) {
            if index != first_segment {
                position = 0;
            }
            'segment: loop {
                let read = read_full_at(&segment.file, &mut block, position)?;
                let mut parsed = 0;
                while let Some((offset, time, stream, length)) = decode_header(&block[parsed..read]) {
                    let size = HEADER_BYTES + length;
                    if read - parsed < size {
                        break;
                    }
                    let end = offset + length as u64;
                    if end > wanted {
                        if !records.is_empty() && offset > wanted {
                            // A gap: the caller decides what to do about it.
                            return Ok(records);
                        }
                        let data = block[parsed + HEADER_BYTES..parsed + size].to_vec();
                        records.push(Record { offset, time, stream, data });
                        taken += length;
                        wanted = end;
                    }
                    parsed += size;
                    if end == wanted {
                        *hint = ReadHint { segment: index, position: position + parsed as u64, offset: end };
                    }
                    if taken >= max_bytes {
                        return Ok(records);
                    }
                }
                if parsed == 0 {
                    // End of the file, or a record cut short: nothing more in this segment.
                    break 'segment;
                }
                position += parsed as u64;
            }
        }
        Ok(records)
    }
}

/// Reads at `position` until `buffer` is full or the file ends; returns how much was read.
fn read_full_at(file: &File, buffer: &mut [u8], position: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], position + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

// === The run directory ===

/// Makes `log_dir` (0700 where it is new; it must belong to the server's user), removes the run
/// directories of servers that are not running, and makes this run's own, `run-<pid>` (0700);
/// returns its path.
pub fn prepare_run_directory(log_dir: &Path) -> io::Result<PathBuf> {
    check_path_is_private(log_dir)?;
    create_private_directory(log_dir)?;
    // Made by the call above, or there before it: checked again, now that it exists (a
    // directory someone made in between is refused here).
    check_path_is_private(log_dir)?;
    // Someone else's directory (another user's in a shared /tmp, say) could read or swap our
    // files: refused.
    let metadata = std::fs::symlink_metadata(log_dir)?;
    let owner = metadata.uid();
    let user = nix::unistd::geteuid().as_raw();
    if owner != user {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("it belongs to user id {owner}, not to the server's user (id {user})"),
        ));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("it is writable by other users (mode {:o}): make it 0700", metadata.mode() & 0o7777),
        ));
    }
    let own = std::process::id();
    for entry in std::fs::read_dir(log_dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) =
            name.to_str().and_then(|name| name.strip_prefix("run-")).and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = u32::try_from(pid).is_ok_and(|pid| pid != own)
            && pid > 0
            && !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            );
        if !alive {
            // What its processes left running first, while the run directory still says where.
            super::cgroup::end_dead_run(&entry.path());
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(directory = %entry.path().display(), "removed the output of a server that is gone")
                }
                Err(error) => {
                    tracing::warn!(directory = %entry.path().display(), %error, "cannot remove the output of a server that is gone")
                }
            }
        }
    }
    let run = log_dir.join(format!("run-{own}"));
    DirBuilder::new().mode(0o700).create(&run)?;
    Ok(run)
}

/// Refuses a path that another user could redirect or write into: every existing component
/// must belong to the server's user or root, and a directory writable by others must be sticky
/// (as `/tmp` is), so no one else can swap what is in it; a symbolic link on the way must belong to
/// the server's user or root, and where it leads is checked the same way. The error names the
/// component.
pub fn check_path_is_private(path: &Path) -> io::Result<()> {
    let user = nix::unistd::geteuid().as_raw();
    let refuse = |path: &Path, why: String| {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} {why}", path.display())))
    };
    let mut current = PathBuf::new();
    for component in path.components() {
        current.push(component);
        let metadata = match std::fs::symlink_metadata(&current) {
            Ok(metadata) => metadata,
            // The rest is made by the server, 0700.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        let owner = metadata.uid();
        if owner != user && owner != 0 {
            let what = if metadata.file_type().is_symlink() { "is a symbolic link that" } else { "" };
            return refuse(
                &current,
                format!("{what} belongs to user id {owner}, not to the server's user (id {user}) or root")
                    .trim_start()
                    .to_owned(),
            );
        }
        if metadata.file_type().is_symlink() {
            let target = std::fs::canonicalize(&current)?;
            check_path_is_private(&target)?;
            current = target;
            continue;
        }
        let mode = metadata.mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return refuse(
                &current,
                format!("is writable by other users (mode {:o}) and not sticky", mode & 0o7777),
            );
        }
    }
    Ok(())
}

/// Removes a directory and what it holds; one that is already gone is fine.
pub fn remove_directory(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(directory = %path.display(), %error, "cannot remove a process's output files")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(nanos: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_nanosecond(1_700_000_000_000_000_000 + i128::from(nanos)).expect("a time")
    }

    fn read_all(directory: &Path) -> Vec<Record> {
        let snapshot = SegmentSnapshot::open(directory).expect("open");
        let mut hint = ReadHint::default();
        let mut records = Vec::new();
        let mut from = 0;
        loop {
            let batch = snapshot.read(from, 100_000, &mut hint).expect("read");
            let Some(last) = batch.last() else { return records };
            from = last.end();
            records.extend(batch);
        }
    }

    fn disk_bytes(directory: &Path) -> u64 {
        [CURRENT_SEGMENT, PREVIOUS_SEGMENT]
            .iter()
            .filter_map(|name| std::fs::metadata(directory.join(name)).ok())
            .map(|metadata| metadata.len())
            .sum()
    }

    #[test]
    fn records_round_trip_byte_for_byte() {
        let header = encode_header(u64::MAX - 7, at(-5), OutputStream::Stderr, 65_536);
        assert_eq!(decode_header(&header), Some((u64::MAX - 7, at(-5), OutputStream::Stderr, 65_536)));
        assert_eq!(decode_header(&header[..HEADER_BYTES - 1]), None, "a short header is no header");
        let mut bad = header;
        bad[16] = 3;
        assert_eq!(decode_header(&bad), None);

        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("p.1");
        let mut writer = SegmentWriter::new(path.clone(), 1 << 20);
        let binary: Vec<u8> = (0..=255u8).collect();
        writer.append(0, at(1), OutputStream::Stdout, &binary).expect("write");
        writer.append(256, at(2), OutputStream::Stderr, b"").expect("an empty write writes no record");
        writer.append(256, at(3), OutputStream::Stderr, b"err\n").expect("write");
        let records = read_all(&path);
        assert_eq!(
            records,
            [
                Record { offset: 0, time: at(1), stream: OutputStream::Stdout, data: binary },
                Record { offset: 256, time: at(3), stream: OutputStream::Stderr, data: b"err\n".to_vec() },
            ]
        );
        let mode = std::fs::metadata(path.join(CURRENT_SEGMENT)).expect("file").mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&path).expect("dir").mode() & 0o777, 0o700);
    }

    #[test]
    fn rotation_keeps_the_disk_within_the_bound_and_the_newest_bytes() {
        const BOUND: u64 = 64 * 1024;
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("p.1");
        let mut writer = SegmentWriter::new(path.clone(), BOUND);
        let mut offset = 0u64;
        for index in 0..5_000u64 {
            let line = format!("line {index}\n").repeat((index % 7 + 1) as usize);
            writer.append(offset, at(index as i64), OutputStream::Stdout, line.as_bytes()).expect("write");
            offset += line.len() as u64;
            assert!(disk_bytes(&path) <= BOUND, "{} bytes on disk after {index} writes", disk_bytes(&path));
        }
        let records = read_all(&path);
        let kept: u64 = records.iter().map(|record| record.data.len() as u64).sum();
        assert_eq!(records.last().map(Record::end), Some(offset), "the newest bytes are kept");
        assert!(kept >= BOUND / 2 - BOUND / 8 - 200 * HEADER_BYTES as u64, "only {kept} bytes kept");
        assert!(records.windows(2).all(|pair| pair[0].end() == pair[1].offset), "contiguous");
    }

    #[test]
    fn a_write_larger_than_a_record_is_split() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("p.1");
        let mut writer = SegmentWriter::new(path.clone(), 1 << 30);
        let big = vec![b'x'; 3 * MAX_RECORD_DATA + 5];
        writer.append(10, at(0), OutputStream::Stdout, &big).expect("write");
        let records = read_all(&path);
        assert_eq!(records.len(), 4);
        assert_eq!((records[0].offset, records[3].end()), (10, 10 + big.len() as u64));
    }

    #[test]
    fn a_reader_across_rotations_neither_loses_nor_duplicates() {
        const BOUND: u64 = 64 * 1024;
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("p.1");
        let mut writer = SegmentWriter::new(path.clone(), BOUND);
        let mut written = 0u64;
        let write = |writer: &mut SegmentWriter, written: &mut u64, count: usize| {
            for _ in 0..count {
                let line = format!("{written:08}\n");
                writer.append(*written, at(0), OutputStream::Stdout, line.as_bytes()).expect("write");
                *written += line.len() as u64;
            }
        };
        write(&mut writer, &mut written, 1000);
        // The reader reads a little at a time while the writer rotates under it several times;
        // it reopens the files when its snapshot has nothing more, as the Logs readers do.
        let mut snapshot = SegmentSnapshot::open(&path).expect("open");
        let mut hint = ReadHint::default();
        let mut from = snapshot.first_offset().expect("records");
        let first = from;
        let mut seen = Vec::new();
        for round in 0.. {
            if round >= 150 && from == written {
                break;
            }
            assert!(round < 10_000, "the reader never caught up");
            let mut batch = snapshot.read(from, 300, &mut hint).expect("read");
            if batch.is_empty() {
                snapshot = SegmentSnapshot::open(&path).expect("open");
                hint = ReadHint::default();
                batch = snapshot.read(from, 300, &mut hint).expect("read");
            }
            for record in batch {
                assert_eq!(record.offset, from, "round {round}: no gap, no duplicate");
                from = record.end();
                seen.extend(record.data);
            }
            if round < 150 {
                write(&mut writer, &mut written, 40);
            }
        }
        let expected: Vec<u8> =
            (0..written / 9).flat_map(|index| format!("{:08}\n", index * 9).into_bytes()).collect();
        assert_eq!(seen, expected[first as usize..]);
    }

    #[test]
    fn a_log_dir_of_another_user_is_refused() {
        let scratch = tempfile::tempdir().expect("tempdir");
        // As root, a directory given to another user; otherwise `/`, which is root's.
        let foreign = if nix::unistd::geteuid().is_root() {
            let foreign = scratch.path().join("theirs");
            std::fs::create_dir(&foreign).expect("mkdir");
            std::os::unix::fs::chown(&foreign, Some(54_321), Some(54_321)).expect("chown as root");
            foreign
        } else {
            PathBuf::from("/")
        };
        let error = prepare_run_directory(&foreign).expect_err("another user's directory");
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
        assert!(error.to_string().contains("not to the server's user"), "{error}");
    }

    #[test]
    fn the_run_directory_replaces_those_of_servers_that_are_gone() {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log_dir = log_dir.path().join("logs");
        // A pid that cannot be alive (above the kernel's maximum), our parent's (alive), a
        // stale directory of our own pid, and a file that is not a run.
        let gone = log_dir.join("run-2147483646");
        let parent = log_dir.join(format!("run-{}", std::os::unix::process::parent_id()));
        let own = log_dir.join(format!("run-{}", std::process::id()));
        for directory in [&gone, &parent, &own] {
            std::fs::create_dir_all(directory.join("web.1")).expect("mkdir");
        }
        std::fs::write(log_dir.join("notes"), "kept").expect("write");
        let run = prepare_run_directory(&log_dir).expect("prepare");
        assert_eq!(run, own);
        assert!(!gone.exists() && parent.exists() && log_dir.join("notes").exists());
        assert!(!own.join("web.1").exists(), "our pid's stale run is emptied");
        assert_eq!(std::fs::metadata(&run).expect("run").mode() & 0o777, 0o700);
    }
}
