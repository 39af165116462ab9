//! Whole objects: compression and format detection, then the record readers, on any bytes
//! (raw, or wrapped in gzip so the decoder sees them too). Never a panic; record numbers rise;
//! an object is either read or refused with one typed error.
#![no_main]

#[path = "common.rs"]
mod common;

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for key in ["tracker/a.ndjson", "dumps/a.json", "access-logs/a.csv", "partners/feedback/a.csv"] {
        let _ = common::read(data, key, 512);
    }
    // The same bytes gzip-compressed read as the plain bytes do.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    let gz = gz.finish().unwrap();
    let (plain_result, plain) = common::read(data, "tracker/a.ndjson", 512);
    let (gz_result, unzipped) = common::read(&gz, "tracker/a.ndjson", 512);
    if let (Ok((_, f1)), Ok((_, f2))) = (&plain_result, &gz_result) {
        assert_eq!(f1, f2);
        assert_eq!(plain, unzipped, "compression does not change the records");
    }
});
