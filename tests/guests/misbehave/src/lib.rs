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
