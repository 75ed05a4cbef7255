//! The page's two kinds of chart, each overlaying the base run (blue) and the new run
//! (orange): latency by percentile on a "nines" axis, and a per-second series. Drawn with
//! plotters as SVG text the page inlines, as the run pages' charts are (this is a small copy
//! of `report`'s, which are private to it: same axes, same labels).

use plotters::prelude::*;

const WIDTH: u32 = 660;
const HEIGHT: u32 = 360;

/// The base run's colour and the new run's, on every chart.
pub const BASE: RGBColor = RGBColor(31, 119, 180);
pub const NEW: RGBColor = RGBColor(255, 127, 14);
/// Lighter shades of the two, for a second line of each run on one chart (p50 under p99).
pub const BASE_LIGHT: RGBColor = RGBColor(140, 190, 225);
pub const NEW_LIGHT: RGBColor = RGBColor(250, 190, 130);

/// One line: its legend, colour and points.
pub struct Line {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// Inline SVG drops the namespace attributes: the page holds no URL at all.
fn finish(svg: String) -> String {
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
        .replace(" xmlns:xlink=\"http://www.w3.org/1999/xlink\"", "")
}

fn no_data(title: &str) -> String {
    format!("<p>{}: no data</p>", super::page::escape(title))
}

/// Latency against percentile, x = 1/(1-p) and y both logarithmic. Points are (percentile
/// in %, latency in ms).
pub fn percentile_chart(title: &str, lines: &[Line]) -> String {
    let nines = |pct: f64| 1.0 / (1.0 - (pct / 100.0).min(0.999_999));
    let pts: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .filter(|p| p.1 > 0.0 && p.0.is_finite() && p.1.is_finite())
        .collect();
    if pts.is_empty() {
        return no_data(title);
    }
    let x_max = pts.iter().map(|p| nines(p.0)).fold(10.0, f64::max) * 1.5;
    let y_min = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(0.001) / 1.5;
    let y_max = pts.iter().map(|p| p.1).fold(0.0, f64::max) * 6.0;
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (1.0..x_max)
                    .log_scale()
                    .with_key_points(vec![2.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]),
                (y_min..y_max).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| nines_label(*x))
            .y_label_formatter(&|y| super::table::num(*y))
            .draw()?;
        for line in lines {
            let color = line.color;
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .filter(|p| p.1 > 0.0)
                .map(|p| (nines(p.0), p.1))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(&line.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => finish(svg),
        Err(e) => format!(
            "<p>{}: {}</p>",
            super::page::escape(title),
            super::page::escape(&e.to_string())
        ),
    }
}

/// The label of a point on the nines axis: 2 -> 50%, 10 -> 90%, 1000 -> 99.9%.
fn nines_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    if p <= 0.0 {
        return "0%".into();
    }
    let digits = (-(1.0 - p / 100.0).log10()).round() as usize;
    format!("{:.*}%", digits.saturating_sub(2), p)
}

/// A per-second series, both axes linear, y from 0.
pub fn series_chart(title: &str, y_desc: &str, lines: &[Line]) -> String {
    let pts: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if pts.is_empty() {
        return no_data(title);
    }
    let x_min = pts.iter().map(|p| p.0).fold(f64::MAX, f64::min);
    let mut x_max = pts.iter().map(|p| p.0).fold(f64::MIN, f64::max);
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    // Headroom above the lines for the legend.
    let y_top = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.45;
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_min..x_max, 0.0..y_top)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc(y_desc)
            .x_label_formatter(&|x| super::table::num(*x))
            .y_label_formatter(&|y| super::table::num(*y))
            .draw()?;
        for line in lines {
            let color = line.color;
            chart
                .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))?
                .label(&line.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => finish(svg),
        Err(e) => format!(
            "<p>{}: {}</p>",
            super::page::escape(title),
            super::page::escape(&e.to_string())
        ),
    }
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
        assert_eq!(series_chart("empty", "ms", &[]), "<p>empty: no data</p>");
    }
}
