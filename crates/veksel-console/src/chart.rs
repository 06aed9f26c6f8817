//! Charts drawn on the server as SVG: no script, nothing fetched, and the numbers
//! also given as text for those who do not see the picture.

use std::fmt::Write;

/// One bar of a bar chart: its label and its two stacked parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// Shown under the bar (every few bars).
    pub label: String,
    /// The lower part (drawn in the chart's main colour).
    pub good: u64,
    /// The upper part (drawn in the warning colour).
    pub bad: u64,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A stacked bar chart of `bars`, `title` and `description` read out by assistive
/// technology (`role="img"` with its title and description).
pub fn stacked_bars(id: &str, title: &str, description: &str, bars: &[Bar]) -> String {
    const WIDTH: u64 = 720;
    const HEIGHT: u64 = 200;
    const LEFT: u64 = 48;
    const BOTTOM: u64 = 24;
    let top = bars
        .iter()
        .map(|b| b.good + b.bad)
        .max()
        .unwrap_or(0)
        .max(1);
    // A round scale: 1, 2 or 5 times a power of ten at or above the highest bar.
    let mut scale = 1;
    while scale < top {
        scale = match scale.to_string().as_bytes().first() {
            Some(b'1') => scale * 2,
            Some(b'2') => scale * 5 / 2,
            _ => scale * 2,
        };
    }
    let plot_h = HEIGHT - BOTTOM - 8;
    let n = u64::try_from(bars.len()).unwrap_or(1).max(1);
    let slot = (WIDTH - LEFT) / n;
    let bar_w = slot.saturating_sub(2).max(1);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg id="{id}" role="img" aria-labelledby="{id}-t {id}-d" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" xmlns="http://www.w3.org/2000/svg"><title id="{id}-t">{}</title><desc id="{id}-d">{}</desc>"##,
        escape(title),
        escape(description)
    );
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{}" x2="{WIDTH}" y2="{}" stroke="#5a5a5a"/><text x="{}" y="14" font-size="12" text-anchor="end" fill="#1a1a1a">{scale}</text><text x="{}" y="{}" font-size="12" text-anchor="end" fill="#1a1a1a">0</text>"##,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
        LEFT - 6,
        LEFT - 6,
        HEIGHT - BOTTOM
    );
    let height_of = |v: u64| v * plot_h / scale;
    let every = (n / 6).max(1);
    for (i, b) in (0u64..).zip(bars) {
        let x = LEFT + i * slot + 1;
        let (g, r) = (height_of(b.good), height_of(b.bad));
        let base = HEIGHT - BOTTOM;
        if g > 0 {
            let _ = write!(
                svg,
                r##"<rect x="{x}" y="{}" width="{bar_w}" height="{g}" fill="#003c5a"/>"##,
                base - g
            );
        }
        if r > 0 {
            let _ = write!(
                svg,
                r##"<rect x="{x}" y="{}" width="{bar_w}" height="{r}" fill="#b00020"/>"##,
                base - g - r
            );
        }
        if i % every == 0 {
            let _ = write!(
                svg,
                r##"<text x="{x}" y="{}" font-size="11" fill="#1a1a1a">{}</text>"##,
                HEIGHT - 6,
                escape(&b.label)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The `p`-th percentile (0–100) of sorted values, nearest rank.
pub fn percentile(sorted: &[i64], p: u64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = u64::try_from(sorted.len()).ok()?;
    let rank = (p * n).div_ceil(100).clamp(1, n) - 1;
    sorted.get(usize::try_from(rank).ok()?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_a_round_top_and_escape_their_text() {
        let bars = vec![
            Bar {
                label: "12:00".into(),
                good: 30,
                bad: 7,
            },
            Bar {
                label: "<b>".into(),
                good: 0,
                bad: 0,
            },
        ];
        let svg = stacked_bars("c", "Requests & faults", "per minute", &bars);
        assert!(svg.contains(r#"role="img""#) && svg.contains("Requests &amp; faults"));
        assert!(svg.contains(">50</text>"), "37 rounds up to 50: {svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert_eq!(
            svg.matches("<rect").count(),
            2,
            "one bar of two parts, none for zero"
        );
        // Bars never rise above the plot.
        assert!(!svg.contains("y=\"-"));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 95), Some(95));
        assert_eq!(percentile(&v, 100), Some(100));
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }
}
