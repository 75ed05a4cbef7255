//! The page's two kinds of chart, each overlaying the base run (blue) and the new run
//! (orange): latency by percentile on a "nines" axis, and a per-second series. They are the
//! reports' own charts ([`crate::report::charts`]), so a comparison reads with the same
//! axes, labels and number formats as the run pages; only the two runs' colours are here.

use plotters::style::RGBColor;

use crate::report::charts;
pub use crate::report::charts::Line;

/// The base run's colour and the new run's, on every chart.
pub const BASE: RGBColor = RGBColor(31, 119, 180);
pub const NEW: RGBColor = RGBColor(255, 127, 14);
/// Lighter shades of the two, for a second line of each run on one chart (p50 under p99).
pub const BASE_LIGHT: RGBColor = RGBColor(140, 190, 225);
pub const NEW_LIGHT: RGBColor = RGBColor(250, 190, 130);

/// Latency against percentile; points are (percentile in %, latency in ms).
pub fn percentile_chart(title: &str, lines: &[Line]) -> String {
    charts::percentile_chart(title, lines)
}

/// A per-second series over the measured window, both axes linear.
pub fn series_chart(title: &str, y_desc: &str, lines: &[Line]) -> String {
    charts::line_chart(title, "time (s)", y_desc, lines, &[], false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_are_svg_with_both_runs_and_no_url() {
        let line = |label: &str, color, k: f64| Line {
            label: label.into(),
            color,
            points: vec![(0.0, k), (50.0, 2.0 * k), (99.0, 8.0 * k), (99.9, 20.0 * k)],
            dashed: false,
        };
        let svg = percentile_chart(
            "send_message",
            &[line("base", BASE, 1.0), line("new", NEW, 1.3)],
        );
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "send_message",
            "latency (ms)",
            "percentile",
            "base",
            "new",
            "99%",
        ] {
            assert!(svg.contains(text), "missing {text}");
        }
        assert!(!svg.contains("http"));
        let ts = series_chart("ops/s", "ops/s", &[line("base", BASE, 1.0)]);
        assert!(ts.contains("time (s)") && !ts.contains("http"), "{ts}");
        assert!(series_chart("empty", "ms", &[]).contains("empty: no data"));
    }
}
