//! The sources (rules) file: any text parses or is refused with a message, never a panic; a
//! parsed file answers `rule_for` for any key, and its time formats convert or refuse.
#![no_main]

use ferry_transform::rules::Rules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The text as a whole file, and as the value of a field a rule maps.
    if let Ok(sources) = Rules::parse(text) {
        for key in ["", "tracker/a", "access-logs/x.csv", text] {
            let _ = sources.rule_for("s3://b", key);
        }
        for rule in sources.rules() {
            let _ = rule.time_format.to_rfc3339("2026-11-21 10:00:00");
            let _ = rule.time_format.to_rfc3339(text);
        }
    }
    for rule in shipped().rules() {
        let _ = rule.time_format.to_rfc3339(text);
    }
});

fn shipped() -> &'static Rules {
    static SOURCES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
    SOURCES.get_or_init(|| {
        Rules::parse(include_str!("../../config/sources.toml")).expect("the shipped rules parse")
    })
}
