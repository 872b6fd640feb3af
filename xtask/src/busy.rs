//! `--busy`: the machine as a newcomer's is on a first run, every core taken by something else
//! (a build beside the demo, an IDE indexing). A CPU burner runs one spinning thread per core
//! for as long as the returned guard lives, so the demo and the tests meet the same scheduling
//! delays (slow rollouts, kube-proxy following late) that a fresh, busy machine shows.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

/// Spinning threads; they stop when this is dropped.
pub struct Burner {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl Burner {
    /// One spinning thread per core.
    pub fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut spins = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        spins = std::hint::black_box(spins.wrapping_add(1));
                    }
                    spins
                })
            })
            .collect();
        println!("busy mode: {cores} CPU burner threads run beside everything that follows");
        Self { stop, threads }
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
