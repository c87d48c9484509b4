//! What a run did, as text (hardlink(1)-like block) or JSON.

use super::scan::ScanCounts;

/// The counters of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// `-n`: nothing was changed; the link counters say what would be.
    pub dry_run: bool,
    /// What the walk saw.
    pub scan: ScanCounts,
    /// Names whose inode shares its metadata with another inode or a store
    /// entry (the others cannot be unified and are not read).
    pub candidates: u64,
    /// Inodes read and hashed.
    pub hashed: u64,
    /// Bytes hashed.
    pub hashed_bytes: u64,
    /// Inodes whose hash came from the index of earlier runs.
    pub reused: u64,
    /// Names replaced by a link to the store.
    pub linked: u64,
    /// Store entries names were linked to.
    pub entries_used: u64,
    /// Of those, created by this run.
    pub entries_new: u64,
    /// Bytes freed minus bytes of new store entries.
    pub bytes_saved: i64,
    /// Names left alone because their file changed during the run.
    pub changed: u64,
    /// Names that failed (reported on stderr).
    pub failed: u64,
    /// Store entries no guest linked to any more, removed.
    pub unused_removed: u64,
    /// Wall-clock duration.
    pub seconds: f64,
}

/// `1.5 GiB`, `300 B`: binary units, one decimal.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// [`human`] for a signed amount.
fn human_signed(bytes: i64) -> String {
    if bytes < 0 {
        format!("-{}", human(bytes.unsigned_abs()))
    } else {
        human(bytes.unsigned_abs())
    }
}

impl Summary {
    /// Adds the link phase's counters of `other` (one group's).
    pub fn add_links(&mut self, other: &Summary) {
        self.linked += other.linked;
        self.entries_used += other.entries_used;
        self.entries_new += other.entries_new;
        self.bytes_saved += other.bytes_saved;
        self.changed += other.changed;
        self.failed += other.failed;
    }

    /// The text block printed at the end of a run.
    pub fn to_text(&self) -> String {
        let s = &self.scan;
        let (would, saved) = if self.dry_run {
            ("would be linked", "would be saved")
        } else {
            ("linked", "saved")
        };
        let rows = [
            (
                "mode",
                if self.dry_run {
                    "dry run (nothing changed)".to_string()
                } else {
                    "unify".to_string()
                },
            ),
            (
                "scanned",
                format!("{} files in {} directories", s.files, s.dirs),
            ),
            (
                "skipped",
                format!(
                    "{} excluded, {} under 16 bytes, {} not regular files, {} mount points",
                    s.excluded, s.too_small, s.not_regular, s.other_fs
                ),
            ),
            ("already unified", format!("{} files", s.already_unified)),
            ("candidates", format!("{} files", self.candidates)),
            (
                "hashed",
                format!(
                    "{} files, {} ({} reused from the index)",
                    self.hashed,
                    human(self.hashed_bytes),
                    self.reused
                ),
            ),
            (
                would,
                format!(
                    "{} files to {} store entries ({} new)",
                    self.linked, self.entries_used, self.entries_new
                ),
            ),
            (saved, human_signed(self.bytes_saved)),
            (
                "changed",
                format!(
                    "{} files (modified during the run, left alone)",
                    self.changed
                ),
            ),
            ("failed", format!("{} files", self.failed + s.failed)),
            (
                "unused removed",
                format!("{} store entries", self.unused_removed),
            ),
            (
                "leftovers",
                format!(
                    "{} swap names of interrupted runs {}",
                    s.leftovers,
                    if self.dry_run {
                        "would be removed"
                    } else {
                        "removed"
                    }
                ),
            ),
            ("duration", format!("{:.3} s", self.seconds)),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        let mut out = String::new();
        for (key, value) in rows {
            let label = format!("{key}:");
            out.push_str(&format!("{label:<width$} {value}\n"));
        }
        out
    }

    /// The JSON object (`--json`).
    pub fn to_json(&self) -> String {
        let s = &self.scan;
        let json = SummaryJson {
            mode: if self.dry_run { "dry-run" } else { "unify" },
            files: s.files,
            directories: s.dirs,
            excluded: s.excluded,
            too_small: s.too_small,
            not_regular: s.not_regular,
            mount_points: s.other_fs,
            already_unified: s.already_unified,
            candidates: self.candidates,
            hashed: self.hashed,
            hashed_bytes: self.hashed_bytes,
            reused: self.reused,
            linked: self.linked,
            entries_used: self.entries_used,
            entries_new: self.entries_new,
            bytes_saved: self.bytes_saved,
            changed: self.changed,
            failed: self.failed + s.failed,
            unused_removed: self.unused_removed,
            leftovers: s.leftovers,
            milliseconds: (self.seconds * 1000.0) as u64,
        };
        serde_json::to_string(&json).expect("plain numbers and strings serialize")
    }
}

/// `hashify --json`'s object, its fields in this order.
#[derive(Debug, serde::Serialize)]
struct SummaryJson {
    mode: &'static str,
    files: u64,
    directories: u64,
    excluded: u64,
    too_small: u64,
    not_regular: u64,
    mount_points: u64,
    already_unified: u64,
    candidates: u64,
    hashed: u64,
    hashed_bytes: u64,
    reused: u64,
    linked: u64,
    entries_used: u64,
    entries_new: u64,
    /// What du shows gone; negative when the store grew more than the
    /// guests' copies it replaced.
    bytes_saved: i64,
    changed: u64,
    failed: u64,
    unused_removed: u64,
    leftovers: u64,
    milliseconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        let table = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 << 30, "5.0 GiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (n, want) in table {
            assert_eq!(human(n), want, "{n}");
        }
        assert_eq!(human_signed(-2048), "-2.0 KiB");
    }

    #[test]
    fn text_and_json() {
        let s = Summary {
            scan: ScanCounts {
                files: 10,
                dirs: 3,
                ..ScanCounts::default()
            },
            candidates: 6,
            hashed: 4,
            hashed_bytes: 4096,
            reused: 2,
            linked: 4,
            entries_used: 2,
            entries_new: 1,
            bytes_saved: 8192,
            seconds: 1.25,
            ..Summary::default()
        };
        let text = s.to_text();
        assert!(
            text.contains("\nhashed:          4 files, 4.0 KiB (2 reused from the index)\n"),
            "{text}"
        );
        assert!(
            text.contains("\nlinked:          4 files to 2 store entries (1 new)\n"),
            "{text}"
        );
        assert!(text.contains("\nsaved:           8.0 KiB\n"), "{text}");
        let dry = Summary {
            dry_run: true,
            ..s.clone()
        };
        assert!(
            dry.to_text().contains("would be linked: 4 files"),
            "{}",
            dry.to_text()
        );
        let json = s.to_json();
        assert!(
            json.starts_with(r#"{"mode":"unify","files":10,"directories":3,"#),
            "{json}"
        );
        assert!(
            json.contains(r#""hashed":4,"#) && json.contains(r#""milliseconds":1250}"#),
            "{json}"
        );
    }
}
