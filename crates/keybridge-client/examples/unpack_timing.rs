//! Times the restore's unpacker alone, without the network: a tar archive
//! is read on a thread of its own and handed over in 256 KiB batches
//! through a bounded queue (as the restore's download does), and unpacked
//! below a new directory with `O_DIRECT` for large files, as `restore` does
//! without `--buffered-io`.
//!
//! `cargo run --release --example unpack_timing -- ARCHIVE TARGET [--buffered-io]`
//! prints the wall time of the unpacking in seconds. TARGET must not exist;
//! it is created and left for the caller to delete.

use std::io::{self, Read};
use std::sync::mpsc;
use std::time::Instant;

/// Reads the batches the reading thread sends and gives each spent one
/// back, as the restore's `PlainReader` does.
struct Batches {
    rx: mpsc::Receiver<Vec<u8>>,
    spare: mpsc::Sender<Vec<u8>>,
    plain: Vec<u8>,
    pos: usize,
}

impl Read for Batches {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.plain.len() {
            match self.rx.recv() {
                Ok(batch) => {
                    let _ = self.spare.send(std::mem::replace(&mut self.plain, batch));
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.plain.len() - self.pos);
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(archive), Some(target)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: unpack_timing ARCHIVE TARGET [--buffered-io]");
        std::process::exit(2);
    };
    let direct_io = args.get(3).map(String::as_str) != Some("--buffered-io");
    std::fs::create_dir(target)?;
    let mut file = std::fs::File::open(archive)?;
    let t0 = Instant::now();
    // Room for 8 MiB, as the restore's queue.
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(32);
    let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
    let reading = std::thread::spawn(move || -> io::Result<()> {
        loop {
            let mut batch = spare_rx.try_recv().unwrap_or_default();
            batch.resize(keybridge_net::FILE_IO_BUF, 0);
            let n = file.read(&mut batch)?;
            batch.truncate(n);
            if n == 0 || tx.send(batch).is_err() {
                return Ok(());
            }
        }
    });
    let mut unpacker = keybridge_client::unpack::Unpacker::new(target.as_ref())?.with_direct_io(direct_io);
    unpacker.unpack(Batches { rx, spare: spare_tx, plain: Vec::new(), pos: 0 })?;
    let unpacked = unpacker.finish()?;
    let seconds = t0.elapsed().as_secs_f64();
    reading.join().expect("the reading thread does not panic")?;
    println!("{seconds:.3} s, {} entries", unpacked.names.len());
    Ok(())
}
