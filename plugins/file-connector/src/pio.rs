//! Positioned reads and writes (`pread`/`pwrite`). Through wasi-libc they become
//! `wasi:filesystem` `descriptor.read`/`write` at an offset, which the host serves on the
//! calling thread. A seek followed by `read`/`write` goes through a new stream instead, and a
//! host hands a file stream's writes to a thread pool: a round trip per write, which made
//! the index's scattered page writes most of a batch's time.

use std::fs::File;
use std::io::{Error, ErrorKind, Read, Result};
use std::os::fd::AsRawFd;

/// Runs a libc call returning a count or -1 with `errno`, again when interrupted.
fn counted(mut call: impl FnMut() -> isize) -> Result<usize> {
    loop {
        match usize::try_from(call()) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let error = Error::last_os_error();
                if error.kind() != ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// One `pread`: bytes read, 0 at the end of the file.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> Result<usize> {
    let at = i64::try_from(offset).map_err(|_| Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: the pointer and length describe `buf`, writable and alive for the call.
    counted(|| unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), at) })
}

/// One `pwrite`: bytes written.
fn write_at(file: &File, buf: &[u8], offset: u64) -> Result<usize> {
    let at = i64::try_from(offset).map_err(|_| Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: the pointer and length describe `buf`, alive for the call.
    counted(|| unsafe { libc::pwrite(file.as_raw_fd(), buf.as_ptr().cast(), buf.len(), at) })
}

/// Fills `buf` from `offset`; fails at the end of the file.
pub fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> Result<()> {
    while !buf.is_empty() {
        match read_at(file, buf, offset)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset`.
pub fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> Result<()> {
    while !buf.is_empty() {
        match write_at(file, buf, offset)? {
            0 => return Err(ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// The bytes of a file from `offset` up to `end`, as a reader (wrap it in a `BufReader`).
pub struct Section<'a> {
    file: &'a File,
    offset: u64,
    end: u64,
}

impl<'a> Section<'a> {
    pub fn new(file: &'a File, offset: u64, end: u64) -> Section<'a> {
        Section { file, offset, end }
    }
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.offset)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = read_at(self.file, &mut buf[..want], self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}
