//! Reading the Rust test harness's `test result:` lines, to say how many tests ran.

use std::fmt;

/// Test counts summed over every `test result:` line seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    /// How many `test result:` lines (test executables) were seen.
    pub suites: u32,
}

impl Counts {
    /// Adds the numbers of a line like
    /// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
    /// Returns whether the line was one.
    pub fn absorb(&mut self, line: &str) -> bool {
        let Some(at) = line.find("test result: ") else {
            return false;
        };
        let rest = &line[at + "test result: ".len()..];
        let Some((_, numbers)) = rest.split_once(". ") else {
            return false;
        };
        self.suites += 1;
        for part in numbers.split(';') {
            let mut words = part.split_whitespace();
            let (Some(count), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u32>() else {
                continue;
            };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
        true
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.suites == 0 {
            return f.write_str("no test results seen");
        }
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.ignored > 0 {
            write!(f, ", {} ignored", self.ignored)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_result_lines() {
        let mut counts = Counts::default();
        assert!(counts.absorb(
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
        ));
        assert!(counts.absorb(
            "vm: test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
        ));
        assert!(!counts.absorb("test listener_counts ... ok"));
        assert_eq!(counts, Counts { passed: 5, failed: 1, ignored: 1, suites: 2 });
        assert_eq!(counts.to_string(), "5 passed, 1 failed, 1 ignored");
        assert_eq!(Counts::default().to_string(), "no test results seen");
    }
}
