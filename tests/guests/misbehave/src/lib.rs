//! The misbehaviours the faulty test guests share.

/// Spins forever, as a plugin stuck in a loop does.
pub fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates a mebibyte at a time until the host stops it.
pub fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}

/// Waits forever without running: a plugin blocked on a clock, as one waiting on a server that
/// never answers is. Only a deadline that covers waits stops it.
pub fn sleep() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Misbehaves as a `poison-mode` says, on a batch holding a poisoned order: `loop`, `alloc`,
/// `sleep`, `garbage` (an answer with no results) or, by default, a panic with `message`.
pub fn poisoned<T>(mode: Option<&str>, message: impl FnOnce() -> String) -> Vec<T> {
    match mode {
        Some("loop") => spin(),
        Some("alloc") => hoard(),
        Some("sleep") => sleep(),
        Some("garbage") => Vec::new(),
        _ => panic!("{}", message()),
    }
}
