//! Text tables that fit the terminal: columns padded to their widest cell, and when the line
//! is wider than the terminal the widest columns give way first (cut with `…`), never
//! wrapping. Piped output (no terminal, no `COLUMNS`) is not cut; `--json` forms are never
//! cut (SPEC.md §13 views; the complete data is always one flag away).

/// How a column's cells sit in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One column: its header, alignment, the narrowest it may be cut to, and whether it may be
/// left out when even the narrowest columns do not fit.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub align: Align,
    /// Never cut below this many columns (`usize::MAX`: never cut, e.g. ids).
    pub min: usize,
    /// 0: always shown; otherwise left out on a narrow terminal, the highest number first.
    pub drop: u8,
    /// The width below which this column is too cut to read well: optional columns are left
    /// out before any column is cut below this.
    pub comfort: usize,
}

impl Column {
    pub const fn left(header: &'static str, min: usize) -> Column {
        Column {
            header,
            align: Align::Left,
            min,
            drop: 0,
            comfort: min,
        }
    }

    pub const fn right(header: &'static str) -> Column {
        Column {
            header,
            align: Align::Right,
            min: usize::MAX,
            drop: 0,
            comfort: 0,
        }
    }

    /// A column that is never cut.
    pub const fn fixed(header: &'static str) -> Column {
        Column {
            header,
            align: Align::Left,
            min: usize::MAX,
            drop: 0,
            comfort: 0,
        }
    }

    /// This column may be left out on a narrow terminal (higher `order`: sooner).
    pub const fn optional(mut self, order: u8) -> Column {
        self.drop = order;
        self
    }

    /// Leave optional columns out before cutting this one below `width`.
    pub const fn comfort(mut self, width: usize) -> Column {
        self.comfort = width;
        self
    }
}

const GAP: usize = 2;

/// The width to fit: the terminal's when stdout is one, else `$COLUMNS` when set, else none.
pub fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if let Some(cols) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
    {
        return Some(cols);
    }
    if std::io::stdout().is_terminal() {
        if let Ok((cols, _)) = crossterm::terminal::size() {
            if cols > 0 {
                return Some(usize::from(cols));
            }
        }
    }
    None
}

/// The height to fill when stdout is a terminal: `$LINES` when set, else the terminal's;
/// `None` when stdout is not a terminal or its height is not known.
pub fn terminal_height() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if let Some(lines) = std::env::var("LINES")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
    {
        return Some(lines);
    }
    match crossterm::terminal::size() {
        Ok((_, rows)) if rows > 0 => Some(usize::from(rows)),
        _ => None,
    }
}

/// Display width of a cell (characters; cells are one line).
fn width(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// `s` on one line in at most `max` characters, ending in `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    let one_line: String = if s.contains(['\n', '\r', '\t']) {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        s.to_string()
    };
    if width(&one_line) <= max {
        return one_line;
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = one_line.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The widest cell of each column (its header included): what [`Layout::fit`] starts from.
/// A table streamed row by row keeps these maxima instead of its cells.
pub fn natural_widths<'a, R, C>(columns: &[Column], rows: R) -> Vec<usize>
where
    R: IntoIterator<Item = C>,
    C: IntoIterator<Item = &'a str>,
{
    let mut w: Vec<usize> = columns.iter().map(|c| width(c.header)).collect();
    for row in rows {
        widen(&mut w, row);
    }
    w
}

/// Raises each of `w` to the width of the cell of `row` in its column.
pub fn widen<'a>(w: &mut [usize], row: impl IntoIterator<Item = &'a str>) {
    for (slot, cell) in w.iter_mut().zip(row) {
        *slot = (*slot).max(width(cell));
    }
}

/// `natural` (each column's widest cell) shrunk to fit `total` (when given): the widest
/// cuttable column shrinks first, down to its minimum, then the next.
fn fit(columns: &[Column], mut w: Vec<usize>, total: Option<usize>) -> Vec<usize> {
    let Some(total) = total else {
        return w;
    };
    let line = |w: &[usize]| w.iter().sum::<usize>() + GAP * w.len().saturating_sub(1);
    let floor = |i: usize| columns[i].min.max(width(columns[i].header));
    while line(&w) > total {
        let over = line(&w) - total;
        // The widest column that can still give.
        let Some(i) = (0..w.len())
            .filter(|&i| w[i] > floor(i))
            .max_by_key(|&i| (w[i], i))
        else {
            break;
        };
        // Down to the next widest first, so the wide columns end up level.
        let next = (0..w.len())
            .filter(|&j| j != i && w[j] < w[i])
            .map(|j| w[j])
            .max()
            .unwrap_or(0);
        let give = over.min(w[i] - floor(i)).min((w[i] - next).max(1));
        w[i] -= give;
    }
    w
}

/// Which columns to show at `total` given their natural widths: all of them, unless they do
/// not fit with every column at least at its comfortable width (or whole, when narrower); then
/// the optional ones go, highest `drop` first.
fn shown(columns: &[Column], natural: &[usize], total: Option<usize>) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..columns.len()).collect();
    let Some(total) = total else {
        return keep;
    };
    loop {
        let line = keep
            .iter()
            .map(|&i| {
                let c = &columns[i];
                if c.min == usize::MAX {
                    natural[i]
                } else {
                    natural[i].min(c.comfort.max(c.min).max(width(c.header)))
                }
            })
            .sum::<usize>()
            + GAP * keep.len().saturating_sub(1);
        if line <= total {
            return keep;
        }
        let Some(pos) = (0..keep.len())
            .filter(|&p| columns[keep[p]].drop > 0)
            .max_by_key(|&p| (columns[keep[p]].drop, p))
        else {
            return keep;
        };
        keep.remove(pos);
    }
}

/// Which columns a table shows and how wide each is: decided once from the widest cell of
/// each column, then used to write the header and each row (so a long table can be written
/// row by row without holding its cells).
#[derive(Debug, Clone)]
pub struct Layout {
    /// The shown columns, as indices into the columns given.
    keep: Vec<usize>,
    columns: Vec<Column>,
    /// The width of each shown column.
    widths: Vec<usize>,
}

impl Layout {
    /// The layout of `columns` whose widest cells are `natural` wide, fitted to `total`
    /// columns (cut the widest first, leave optional columns out when that is not enough).
    pub fn fit(columns: &[Column], natural: &[usize], total: Option<usize>) -> Layout {
        let keep = shown(columns, natural, total);
        let kept: Vec<Column> = keep.iter().map(|&i| columns[i]).collect();
        let natural: Vec<usize> = keep.iter().map(|&i| natural[i]).collect();
        let widths = fit(&kept, natural, total);
        Layout {
            keep,
            columns: kept,
            widths,
        }
    }

    /// Appends the header line.
    pub fn header_into(&self, out: &mut String) {
        let headers: Vec<&str> = self.columns.iter().map(|c| c.header).collect();
        self.put(out, |i| headers[i]);
    }

    /// Appends one row (its cells in the order of all the columns, shown or not), padded to
    /// the widths, without trailing spaces, ending in a newline.
    pub fn row_into(&self, out: &mut String, cells: &[&str]) {
        self.put(out, |i| cells.get(self.keep[i]).copied().unwrap_or(""));
    }

    fn put<'a>(&self, out: &mut String, cell: impl Fn(usize) -> &'a str) {
        let start = out.len();
        for (i, column) in self.columns.iter().enumerate() {
            let w = self.widths[i];
            let raw = cell(i);
            let raw_width = width(raw);
            let cut_cell;
            let (text, text_width) = if raw_width > w || raw.contains(['\n', '\r', '\t']) {
                cut_cell = cut(raw, w);
                (cut_cell.as_str(), width(&cut_cell))
            } else {
                (raw, raw_width)
            };
            let pad = w.saturating_sub(text_width);
            if i > 0 {
                out.push_str("  ");
            }
            match column.align {
                Align::Right => {
                    spaces(out, pad);
                    out.push_str(text);
                }
                Align::Left => {
                    out.push_str(text);
                    spaces(out, pad);
                }
            }
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    }
}

fn spaces(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// The table as text, one line per row plus the header, fitted to `total` columns (cut the
/// widest first, leave optional columns out when that is not enough; never wrap).
pub fn render(columns: &[Column], rows: &[Vec<String>], total: Option<usize>) -> String {
    render_rows(columns, &[(String::new(), rows)], total)
}

/// Rows in groups under a label line each (`TODAY`, …), one header on top; the columns have
/// the same widths in every group.
pub fn render_grouped(
    columns: &[Column],
    groups: &[(String, Vec<Vec<String>>)],
    total: Option<usize>,
) -> String {
    let groups: Vec<(String, &[Vec<String>])> = groups
        .iter()
        .map(|(label, rows)| (label.clone(), rows.as_slice()))
        .collect();
    render_rows(columns, &groups, total)
}

fn render_rows(
    columns: &[Column],
    groups: &[(String, &[Vec<String>])],
    total: Option<usize>,
) -> String {
    let natural = natural_widths(
        columns,
        groups
            .iter()
            .flat_map(|(_, rows)| rows.iter())
            .map(|r| r.iter().map(String::as_str)),
    );
    let layout = Layout::fit(columns, &natural, total);
    let mut out = String::new();
    layout.header_into(&mut out);
    let mut cells: Vec<&str> = Vec::with_capacity(columns.len());
    for (label, rows) in groups {
        if !label.is_empty() {
            out.push_str(&cut(label, total.unwrap_or(usize::MAX)));
            out.push('\n');
        }
        for row in rows.iter() {
            cells.clear();
            cells.extend(row.iter().map(String::as_str));
            layout.row_into(&mut out, &cells);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Vec<Column>, Vec<Vec<String>>) {
        let columns = vec![
            Column::fixed("ID"),
            Column::left("PROJECT", 6),
            Column::right("COST"),
            Column::left("TITLE", 10),
        ];
        let rows = vec![
            vec![
                "3f2a1b0c9d8e".into(),
                "billing-api".into(),
                "$1.20".into(),
                "Fix the login page flicker on Safari when the cookie expires".into(),
            ],
            vec![
                "9a8b7c6d5e4f".into(),
                "web".into(),
                "$0.05".into(),
                "Add retries".into(),
            ],
        ];
        (columns, rows)
    }

    #[test]
    fn unfitted_tables_keep_everything() {
        let (c, r) = table();
        let text = render(&c, &r, None);
        assert!(text.contains("Fix the login page flicker on Safari when the cookie expires"));
        assert_eq!(
            text.lines().next(),
            Some("ID            PROJECT       COST  TITLE")
        );
    }

    #[test]
    fn the_widest_column_gives_way_and_nothing_wraps() {
        let (c, r) = table();
        for total in [80, 60, 45, 40, 30] {
            let text = render(&c, &r, Some(total));
            for line in text.lines() {
                assert!(
                    line.chars().count() <= total.max(12 + 2 + 7 + 2 + 5 + 2 + 10),
                    "{total}: {line:?}"
                );
            }
            // Ids and costs are never cut.
            assert!(
                text.contains("3f2a1b0c9d8e") && text.contains("$1.20"),
                "{text}"
            );
        }
        let text = render(&c, &r, Some(50));
        assert!(text.contains("billing-api"), "{text}");
        assert!(
            text.contains("Fix the login…") || text.contains('…'),
            "{text}"
        );
        // Narrower than the narrowest columns: an optional column goes, ids stay whole.
        let mut c = c.clone();
        c[2] = Column::right("COST").optional(1);
        let text = render(&c, &r, Some(34));
        assert!(
            !text.contains("COST") && text.contains("3f2a1b0c9d8e"),
            "{text}"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 34), "{text}");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("a\nb", 10), "a b");
    }
}
