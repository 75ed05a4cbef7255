//! The charts, drawn with plotters as SVG text that the pages inline.
//!
//! Every chart has a title, axis labels with units and a legend. Colours are fixed per
//! operation and per replica count ([`op_color`], [`replicas_color`]) so the same line has the
//! same colour on every chart of every page. SVG needs no fonts installed and no JavaScript to
//! be seen.

use plotters::coord::Shift;
use plotters::prelude::*;

pub const WIDTH: u32 = 660;
pub const HEIGHT: u32 = 360;

/// One line of a chart.
pub struct Line {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// A vertical marker (a leader change, an injected fault, a snapshot) at an x value.
pub struct Marker {
    pub x: f64,
    pub label: String,
    pub kind: MarkerKind,
}

/// How a marker is drawn: events in grey with their label at the top, snapshots (frequent,
/// and made by every replica at about the same index) in orange with a label lower down, so
/// neither hides the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    Event,
    Snapshot,
}

const OPS: [&str; 6] = [
    "send_message",
    "get_messages",
    "get_chat_users",
    "join_chat",
    "create_chat",
    "create_user",
];

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The colour of an operation, the same on every chart.
pub fn op_color(op: &str) -> RGBColor {
    let i = OPS.iter().position(|o| *o == op).unwrap_or(7);
    PALETTE[i]
}

/// The colour of a replica count, the same on every chart: 1, 3, 5, 7 first.
pub fn replicas_color(replicas: u32) -> RGBColor {
    let i = match replicas {
        1 => 0,
        3 => 1,
        5 => 2,
        7 => 3,
        n => 4 + (n as usize % 4),
    };
    PALETTE[i]
}

/// The colour of the n-th scenario in a sorted list.
pub fn nth_color(n: usize) -> RGBColor {
    PALETTE[n % PALETTE.len()]
}

/// Inline SVG drops the namespace attribute: the page holds no URL at all.
fn finish(svg: String) -> String {
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
        .replace(" xmlns:xlink=\"http://www.w3.org/1999/xlink\"", "")
}

fn empty(root: &DrawingArea<SVGBackend, Shift>, title: &str) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let style = TextStyle::from(("sans-serif", 16).into_font()).color(&BLACK);
    root.draw_text(&format!("{title}: no data"), &style, (20, 30))
        .map_err(|e| e.to_string())
}

/// Latency against percentile on a "nines" axis (x = 1/(1-p)), both logarithmic: the HDR
/// percentile distribution. Points are (percentile in %, latency in ms).
pub fn percentile_chart(title: &str, lines: &[Line]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let result = (|| -> Result<(), String> {
            let pts: Vec<(f64, f64)> = lines
                .iter()
                .flat_map(|l| l.points.iter().copied())
                .filter(|p| p.1 > 0.0)
                .collect();
            if pts.is_empty() {
                return empty(&root, title);
            }
            let nines = |pct: f64| 1.0 / (1.0 - (pct / 100.0).min(0.999_999));
            let x_max = pts.iter().map(|p| nines(p.0)).fold(10.0, f64::max) * 1.5;
            let y_min = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(0.001) / 1.5;
            // Headroom above the curves for the legend (upper left).
            let y_max = pts.iter().map(|p| p.1).fold(0.0, f64::max) * 6.0;
            root.fill(&WHITE).map_err(|e| e.to_string())?;
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
                )
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("percentile")
                .y_desc("latency (ms)")
                .x_label_formatter(&|x| nines_label(*x))
                .y_label_formatter(&|y| round3(*y))
                .draw()
                .map_err(|e| e.to_string())?;
            for line in lines {
                let color = line.color;
                let points: Vec<(f64, f64)> = line
                    .points
                    .iter()
                    .filter(|p| p.1 > 0.0)
                    .map(|p| (nines(p.0), p.1))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
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
                .draw()
                .map_err(|e| e.to_string())?;
            root.present().map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            return format!("<p>chart '{title}' could not be drawn: {e}</p>");
        }
    }
    finish(svg)
}

/// The label of a point on the nines axis: 2 -> 50%, 10 -> 90%, 1000 -> 99.9%.
pub fn nines_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    if p <= 0.0 {
        return "0%".into();
    }
    let digits = (-(1.0 - p / 100.0).log10()).round() as usize;
    format!("{:.*}%", digits.saturating_sub(2), p)
}

/// A number rounded to 3 significant figures, without trailing zeros: 1234.6 -> 1235,
/// 12.345 -> 12.3, 2.50 -> 2.5.
pub fn round3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let digits = 2 - v.abs().log10().floor() as i32;
    if digits <= 0 {
        format!("{:.0}", v)
    } else {
        let s = format!("{:.*}", digits as usize, v);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Axis labels for a count (replicas): whole numbers only.
fn whole(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round())
    } else {
        String::new()
    }
}

/// A line chart with linear axes (time series, scaling panel). `log_y` for latency.
pub fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Line],
    markers: &[Marker],
    log_y: bool,
) -> String {
    // A chart against replica count labels whole numbers only.
    let integer_x = x_desc == "replicas";
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let result = (|| -> Result<(), String> {
            let pts: Vec<(f64, f64)> = lines
                .iter()
                .flat_map(|l| l.points.iter().copied())
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            if pts.is_empty() {
                return empty(&root, title);
            }
            let x_min = pts.iter().map(|p| p.0).fold(f64::MAX, f64::min);
            let mut x_max = pts.iter().map(|p| p.0).fold(f64::MIN, f64::max);
            if x_max <= x_min {
                x_max = x_min + 1.0;
            }
            // Headroom above the lines for the legend (upper left).
            let y_max =
                pts.iter()
                    .map(|p| p.1)
                    .fold(0.0, f64::max)
                    .max(if log_y { 1e-3 } else { 1.0 });
            let y_top = if log_y { y_max * 8.0 } else { y_max * 1.45 };
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let mut builder = ChartBuilder::on(&root);
            builder
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60);
            macro_rules! draw {
                ($chart:expr) => {{
                    let mut chart = $chart;
                    chart
                        .configure_mesh()
                        .x_desc(x_desc)
                        .y_desc(y_desc)
                        .x_label_formatter(&|x| if integer_x { whole(*x) } else { round3(*x) })
                        .y_label_formatter(&|y| round3(*y))
                        .draw()
                        .map_err(|e| e.to_string())?;
                    for m in markers {
                        let (x, label) = (m.x, m.label.clone());
                        let (stroke, label_y) = match m.kind {
                            MarkerKind::Event => (
                                BLACK.mix(0.5).stroke_width(1),
                                if log_y { y_top / 1.3 } else { y_top / 1.04 },
                            ),
                            MarkerKind::Snapshot => (
                                RGBColor(230, 120, 0).mix(0.6).stroke_width(1),
                                if log_y { y_top / 2.2 } else { y_top / 1.12 },
                            ),
                        };
                        chart
                            .draw_series(std::iter::once(PathElement::new(
                                vec![(x, y_floor(log_y, &pts)), (x, y_top)],
                                stroke,
                            )))
                            .map_err(|e| e.to_string())?;
                        chart
                            .draw_series(std::iter::once(Text::new(
                                label,
                                (x, label_y),
                                ("sans-serif", 11),
                            )))
                            .map_err(|e| e.to_string())?;
                    }
                    for line in lines {
                        let color = line.color;
                        let style = color.stroke_width(if line.dashed { 1 } else { 2 });
                        let pts: Vec<(f64, f64)> = line
                            .points
                            .iter()
                            .copied()
                            .filter(|p| !log_y || p.1 > 0.0)
                            .collect();
                        let single = pts.len() == 1;
                        chart
                            .draw_series(LineSeries::new(pts.clone(), style))
                            .map_err(|e| e.to_string())?
                            .label(&line.label)
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 18, y)], style)
                            });
                        if single || lines.len() <= 8 && pts.len() <= 12 {
                            chart
                                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    chart
                        .configure_series_labels()
                        .position(SeriesLabelPosition::UpperLeft)
                        .background_style(WHITE.mix(0.85))
                        .border_style(BLACK)
                        .draw()
                        .map_err(|e| e.to_string())?;
                }};
            }
            if log_y {
                let floor = y_floor(true, &pts);
                draw!(
                    builder
                        .build_cartesian_2d(x_min..x_max, (floor..y_top).log_scale())
                        .map_err(|e| e.to_string())?
                );
            } else {
                draw!(
                    builder
                        .build_cartesian_2d(x_min..x_max, 0.0..y_top)
                        .map_err(|e| e.to_string())?
                );
            }
            root.present().map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            return format!("<p>chart '{title}' could not be drawn: {e}</p>");
        }
    }
    finish(svg)
}

/// One probe of a capacity search, as its chart shows it.
pub struct ProbePoint {
    /// Offered and achieved ops/s.
    pub offered: f64,
    pub achieved: f64,
    /// `pass`, `fail` or `lost`.
    pub verdict: String,
}

/// The colours of probe verdicts: green pass, red fail, purple lost.
const PASS: RGBColor = RGBColor(44, 160, 44);
const FAIL: RGBColor = RGBColor(214, 39, 40);
const LOST: RGBColor = RGBColor(148, 103, 189);

/// A capacity search's probes on a rate axis: achieved against offered ops/s, each probe
/// marked by its verdict (a filled green circle passed, a red cross failed, a purple
/// triangle was cut short as lost), the line where achieved equals offered, and a vertical
/// line at the maximum sustainable rate.
pub fn probe_chart(title: &str, probes: &[ProbePoint], max_sustainable: f64) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let result = (|| -> Result<(), String> {
            if probes.is_empty() {
                return empty(&root, title);
            }
            let top = probes
                .iter()
                .flat_map(|p| [p.offered, p.achieved])
                .fold(1.0, f64::max)
                * 1.1;
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..top, 0.0..top * 1.3)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("offered (ops/s)")
                .y_desc("achieved (ops/s)")
                .x_label_formatter(&|x| round3(*x))
                .y_label_formatter(&|y| round3(*y))
                .draw()
                .map_err(|e| e.to_string())?;
            let grey = BLACK.mix(0.35).stroke_width(1);
            chart
                .draw_series(LineSeries::new(vec![(0.0, 0.0), (top, top)], grey))
                .map_err(|e| e.to_string())?
                .label("achieved = offered")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey));
            if max_sustainable > 0.0 {
                let green = PASS.mix(0.7).stroke_width(1);
                chart
                    .draw_series(LineSeries::new(
                        vec![(max_sustainable, 0.0), (max_sustainable, top * 1.3)],
                        green,
                    ))
                    .map_err(|e| e.to_string())?
                    .label(format!("max sustainable {} ops/s", round3(max_sustainable)))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], green));
            }
            let of = |v: &str| -> Vec<(f64, f64)> {
                probes
                    .iter()
                    .filter(|p| p.verdict == v)
                    .map(|p| (p.offered, p.achieved))
                    .collect()
            };
            chart
                .draw_series(
                    of("pass")
                        .into_iter()
                        .map(|p| Circle::new(p, 5, PASS.filled())),
                )
                .map_err(|e| e.to_string())?
                .label("pass")
                .legend(|(x, y)| Circle::new((x + 9, y), 5, PASS.filled()));
            chart
                .draw_series(
                    of("fail")
                        .into_iter()
                        .map(|p| Cross::new(p, 5, FAIL.stroke_width(2))),
                )
                .map_err(|e| e.to_string())?
                .label("fail")
                .legend(|(x, y)| Cross::new((x + 9, y), 5, FAIL.stroke_width(2)));
            chart
                .draw_series(
                    of("lost")
                        .into_iter()
                        .map(|p| TriangleMarker::new(p, 6, LOST.filled())),
                )
                .map_err(|e| e.to_string())?
                .label("lost (cut short)")
                .legend(|(x, y)| TriangleMarker::new((x + 9, y), 6, LOST.filled()));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
            root.present().map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            return format!("<p>chart '{title}' could not be drawn: {e}</p>");
        }
    }
    finish(svg)
}

fn y_floor(log_y: bool, pts: &[(f64, f64)]) -> f64 {
    if log_y {
        pts.iter()
            .map(|p| p.1)
            .filter(|v| *v > 0.0)
            .fold(f64::MAX, f64::min)
            .clamp(1e-3, 1e9)
            / 1.5
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis_labels_read_as_percentiles() {
        assert_eq!(nines_label(2.0), "50%");
        assert_eq!(nines_label(10.0), "90%");
        assert_eq!(nines_label(100.0), "99%");
        assert_eq!(nines_label(1000.0), "99.9%");
        assert_eq!(nines_label(10000.0), "99.99%");
    }

    #[test]
    fn numbers_keep_three_significant_figures() {
        assert_eq!(round3(1234.6), "1235");
        assert_eq!(round3(12.345), "12.3");
        assert_eq!(round3(0.012345), "0.0123");
        assert_eq!(round3(1.0), "1");
        assert_eq!(round3(2.5), "2.5");
        assert_eq!(whole(3.0), "3");
        assert_eq!(whole(2.5), "");
    }

    #[test]
    fn charts_are_svg_with_titles_labels_and_no_urls() {
        let line = Line {
            label: "send_message".into(),
            color: op_color("send_message"),
            points: vec![
                (0.0, 1.0),
                (50.0, 2.0),
                (90.0, 3.0),
                (99.0, 8.0),
                (99.9, 20.0),
            ],
            dashed: false,
        };
        let svg = percentile_chart("Latency by percentile", &[line]);
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "Latency by percentile",
            "latency (ms)",
            "percentile",
            "send_message",
            "99%",
        ] {
            assert!(svg.contains(text), "missing {text}");
        }
        assert!(!svg.contains("http"), "no URL in an inlined chart");
        let ts = line_chart(
            "ops/s",
            "time (s)",
            "ops/s",
            &[Line {
                label: "achieved".into(),
                color: nth_color(0),
                points: vec![(1.0, 10.0), (2.0, 12.0)],
                dashed: false,
            }],
            &[
                Marker {
                    x: 1.5,
                    label: "leader 2".into(),
                    kind: MarkerKind::Event,
                },
                Marker {
                    x: 1.7,
                    label: "snapshot n1,n3".into(),
                    kind: MarkerKind::Snapshot,
                },
            ],
            false,
        );
        assert!(ts.contains("leader 2") && ts.contains("time (s)"), "{ts}");
        assert!(ts.contains("snapshot n1,n3"), "{ts}");
    }
}
