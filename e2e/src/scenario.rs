//! The runner of the test binaries with their own harness (`harness = false`:
//! `e2e/tests/scenarios.rs`, `e2e/tests/scale_to_zero_netns.rs`).
//!
//! They run their tests one after the other (clusters and the 2-core machine
//! are shared), report a test that cannot run here as SKIPPED with the reason
//! and count it as libtest's "ignored", never as passed. The output keeps
//! libtest's shape: `e2e/scripts/test.sh` adds up the `test result:` lines.
//!
//! ```no_run
//! use spindle_e2e::scenario::{Args, Outcome, Selection};
//!
//! async fn one() -> anyhow::Result<Outcome> {
//!     Ok(Outcome::Passed)
//! }
//!
//! let args = Args::from_env();
//! let selection = Selection::new(&spindle_e2e::scenarios![one], &args);
//! if args.list {
//!     selection.list();
//!     return;
//! }
//! selection.announce("tests");
//! let summary = selection.run("---", 10);
//! summary.print();
//! summary.exit();
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// What a test ended with (failures are errors or panics).
pub enum Outcome {
    /// It ran and everything it checks held.
    Passed,
    /// It cannot run here; the reason is printed and it counts as ignored.
    Skipped(String),
}

/// A running test, boxed so that different `async fn`s share one type.
pub type TestFuture = Pin<Box<dyn Future<Output = anyhow::Result<Outcome>> + Send>>;

/// Starts a test.
pub type Run = fn() -> TestFuture;

/// `[(name, Run); N]` for the given `async fn() -> anyhow::Result<Outcome>`s,
/// named after the functions.
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        [$((
            stringify!($name),
            (|| ::std::boxed::Box::pin($name()) as $crate::scenario::TestFuture)
                as $crate::scenario::Run,
        )),*]
    };
}

/// The command line, as far as these binaries read it.
pub struct Args {
    /// Every argument after the program name, as given (to pass on when the
    /// binary re-executes itself).
    pub raw: Vec<String>,
    /// `--list`: print the selected names in libtest's format, run nothing.
    pub list: bool,
    /// The arguments not starting with `-`: a test runs when its name contains
    /// one of them (or there are none).
    pub filters: Vec<String>,
}

impl Args {
    /// This process's arguments.
    pub fn from_env() -> Self {
        Self::parse(std::env::args().skip(1).collect())
    }

    /// Reads `args` (without the program name). Other flags cargo or a user
    /// passes (`--nocapture`, `--test-threads=N`, ...) are ignored, but not their
    /// values when given as a separate argument: those count as filters.
    pub fn parse(raw: Vec<String>) -> Self {
        let list = raw.iter().any(|a| a == "--list");
        let filters = raw
            .iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect();
        Self { raw, list, filters }
    }
}

/// The tests the filters select, in the order given.
pub struct Selection {
    /// Name and start of each selected test.
    pub tests: Vec<(&'static str, Run)>,
    /// How many the filters left out.
    pub filtered_out: usize,
}

impl Selection {
    /// Selects from `all` by `args.filters`.
    pub fn new(all: &[(&'static str, Run)], args: &Args) -> Self {
        let tests: Vec<_> = all
            .iter()
            .filter(|(name, _)| {
                args.filters.is_empty() || args.filters.iter().any(|f| name.contains(f.as_str()))
            })
            .copied()
            .collect();
        Self {
            filtered_out: all.len() - tests.len(),
            tests,
        }
    }

    /// The selected names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tests.iter().map(|(name, _)| *name)
    }

    /// Prints the selected names as `cargo test -- --list` does.
    pub fn list(&self) {
        for name in self.names() {
            println!("{name}: test");
        }
    }

    /// Prints libtest's `running N <noun>` header.
    pub fn announce(&self, noun: &str) {
        println!("\nrunning {} {noun}", self.tests.len());
    }

    /// Runs the tests one after the other on a 2-thread runtime, each with a
    /// timeout of `timeout_minutes`, printing `test NAME ... ok/FAILED/SKIPPED`
    /// for each (and `<marker> NAME` on stderr when it starts, to tell the tests'
    /// own output apart).
    pub fn run(&self, marker: &str, timeout_minutes: u64) -> Summary {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut summary = Summary::new(self.filtered_out);
        for &(name, run) in &self.tests {
            let started = Instant::now();
            eprintln!("{marker} {name}");
            let result = rt.block_on(async {
                // A panic inside the task becomes a JoinError: a failure, not an abort.
                let timeout = Duration::from_secs(timeout_minutes * 60);
                match tokio::time::timeout(timeout, tokio::spawn(run())).await {
                    Err(_) => Err(anyhow::anyhow!("timed out after {timeout_minutes} minutes")),
                    Ok(Err(join)) => Err(anyhow::anyhow!("panicked: {join}")),
                    Ok(Ok(r)) => r,
                }
            });
            let secs = started.elapsed().as_secs_f32();
            match result {
                Ok(Outcome::Passed) => {
                    summary.passed += 1;
                    println!("test {name} ... ok ({secs:.1}s)");
                }
                Ok(Outcome::Skipped(reason)) => {
                    summary.ignored += 1;
                    println!("test {name} ... SKIPPED: {reason}");
                }
                Err(e) => {
                    summary.failed += 1;
                    println!("test {name} ... FAILED ({secs:.1}s)");
                    summary.failures.push(format!("---- {name} ----\n{e:#}"));
                }
            }
        }
        summary
    }
}

/// The counts of a run, for libtest's `test result:` line.
pub struct Summary {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
    /// Tests that were skipped (libtest's "ignored").
    pub ignored: usize,
    /// Tests the filters left out.
    pub filtered_out: usize,
    /// `---- NAME ----` and the error, for each failure that has one to show.
    pub failures: Vec<String>,
}

impl Summary {
    /// Nothing counted yet.
    pub fn new(filtered_out: usize) -> Self {
        Self {
            passed: 0,
            failed: 0,
            ignored: 0,
            filtered_out,
            failures: Vec::new(),
        }
    }

    /// Prints the failures (if any) and the `test result:` line.
    pub fn print(&self) {
        let Self {
            passed,
            failed,
            ignored,
            filtered_out,
            failures,
        } = self;
        if !failures.is_empty() {
            println!("\nfailures:\n\n{}", failures.join("\n\n"));
        }
        println!(
            "\ntest result: {}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; {filtered_out} filtered out\n",
            if *failed == 0 { "ok" } else { "FAILED" }
        );
    }

    /// Exits the process: 1 if a test failed, else 0.
    pub fn exit(&self) -> ! {
        std::process::exit(i32::from(self.failed > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn passes() -> anyhow::Result<Outcome> {
        Ok(Outcome::Passed)
    }
    async fn skips() -> anyhow::Result<Outcome> {
        Ok(Outcome::Skipped("not here".into()))
    }
    async fn errs() -> anyhow::Result<Outcome> {
        anyhow::bail!("broken")
    }
    async fn panics() -> anyhow::Result<Outcome> {
        panic!("boom")
    }

    fn args(a: &[&str]) -> Args {
        Args::parse(a.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn flags_are_ignored_and_the_rest_filters() {
        let a = args(&["--list", "--nocapture", "--test-threads=1", "pass", "err"]);
        assert!(a.list);
        assert_eq!(a.filters, ["pass", "err"]);
        let all = crate::scenarios![passes, skips, errs, panics];
        let s = Selection::new(&all, &a);
        assert_eq!(s.names().collect::<Vec<_>>(), ["passes", "errs"]);
        assert_eq!(s.filtered_out, 2);
        assert_eq!(Selection::new(&all, &args(&[])).tests.len(), 4);
    }

    #[test]
    fn run_counts_each_outcome() {
        let all = crate::scenarios![passes, skips, errs, panics];
        let s = Selection::new(&all, &args(&["s"]));
        let summary = s.run("---", 1);
        let counts = (summary.passed, summary.failed, summary.ignored);
        assert_eq!(counts, (1, 2, 1));
        assert_eq!(summary.filtered_out, 0);
        assert!(summary.failures[0].starts_with("---- errs ----\nbroken"));
        assert!(
            summary.failures[1].contains("panicked"),
            "{}",
            summary.failures[1]
        );
    }
}
