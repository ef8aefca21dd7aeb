//! Sizes in words for messages people read: limits are said as "50 MiB",
//! not as a count of bytes.

/// "512 MiB", "64 KiB", "900 bytes" (the same wording as the PDF reader's errors).
pub fn human_bytes(n: u64) -> String {
    pdftext::human_bytes(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_read_in_binary_units() {
        assert_eq!(super::human_bytes(512 << 20), "512 MiB");
        assert_eq!(super::human_bytes(52_428_800), "50 MiB");
        assert_eq!(super::human_bytes(64 << 10), "64 KiB");
        assert_eq!(super::human_bytes(2 << 30), "2 GiB");
        assert_eq!(super::human_bytes(900), "900 bytes");
    }
}
