//! The wake indicator: while a workspace wakes, one line on stderr shows a spinner, the states
//! seen so far (`stopped → starting`) and the elapsed time; when it is running the line is
//! replaced by a permanent summary. Only drawn when stderr is a terminal, and not at all if the
//! workspace was already running.

use std::io::Write;
use std::time::Duration;

use protocol::WorkspaceStatus;
use tokio::time::Instant;

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// How often the spinner redraws.
pub const TICK: Duration = Duration::from_millis(100);

/// The wake display for one connection attempt.
#[derive(Debug)]
pub struct WakeDisplay {
    enabled: bool,
    label: String,
    started: Instant,
    trail: Vec<WorkspaceStatus>,
    drawing: bool,
    /// Set once the wake is over (running, failed, or attached): later status changes of a
    /// live session are not a wake and draw nothing.
    finished: bool,
    frame: usize,
}

/// The states seen so far, joined by arrows.
pub fn trail_text(trail: &[WorkspaceStatus]) -> String {
    trail
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Seconds with one decimal.
pub fn elapsed_text(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

/// The spinner line (without the carriage return and clear).
pub fn spinner_line(
    frame: usize,
    label: &str,
    trail: &[WorkspaceStatus],
    elapsed: Duration,
) -> String {
    format!(
        "{} waking workspace {label}: {}  {}",
        FRAMES[frame % FRAMES.len()],
        trail_text(trail),
        elapsed_text(elapsed)
    )
}

impl WakeDisplay {
    /// `enabled` is whether stderr is a terminal; `workspace` is shown shortened.
    pub fn new(enabled: bool, workspace: &str) -> WakeDisplay {
        WakeDisplay {
            enabled,
            label: workspace.chars().take(8).collect(),
            started: Instant::now(),
            trail: Vec::new(),
            drawing: false,
            finished: false,
            frame: 0,
        }
    }

    /// Whether the spinner is on screen (the session ticks it then).
    pub fn is_drawing(&self) -> bool {
        self.drawing
    }

    /// A status message arrived.
    pub fn status(&mut self, status: WorkspaceStatus) {
        if self.trail.last() != Some(&status) {
            self.trail.push(status);
        }
        if status == WorkspaceStatus::Running {
            self.finish(None);
        } else if self.enabled && !self.finished {
            self.drawing = true;
            self.draw();
        }
    }

    /// Redraws with the next frame.
    pub fn tick(&mut self) {
        if self.drawing {
            self.frame += 1;
            self.draw();
        }
    }

    /// Replaces the spinner by a summary line: the trail, and the error if there was one.
    pub fn finish(&mut self, error: Option<&str>) {
        self.finished = true;
        if !self.drawing {
            return;
        }
        self.drawing = false;
        let mut line = format!(
            "workspace {}: {} ({})",
            self.label,
            trail_text(&self.trail),
            elapsed_text(self.started.elapsed())
        );
        if let Some(error) = error {
            line.push_str(&format!(": {error}"));
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}\r\n");
        let _ = err.flush();
    }

    fn draw(&self) {
        let line = spinner_line(self.frame, &self.label, &self.trail, self.started.elapsed());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_trail_and_elapsed() {
        let line = spinner_line(
            1,
            "1b2c3d4e",
            &[WorkspaceStatus::Stopped, WorkspaceStatus::Starting],
            Duration::from_millis(2345),
        );
        assert_eq!(
            line,
            "⠙ waking workspace 1b2c3d4e: stopped → starting  2.3s"
        );
    }

    #[test]
    fn nothing_draws_after_the_wake_is_over() {
        let mut d = WakeDisplay::new(true, "abc");
        d.status(WorkspaceStatus::Running);
        d.status(WorkspaceStatus::Stopped);
        assert!(!d.is_drawing());
    }

    #[test]
    fn disabled_display_never_draws() {
        let mut d = WakeDisplay::new(false, "abc");
        d.status(WorkspaceStatus::Starting);
        assert!(!d.is_drawing());
    }
}
