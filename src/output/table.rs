//! Tables laid out as TiUP lays them out: a header, a row of dashes under it, columns
//! left-aligned and separated by two spaces, no borders.

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets::NOTHING};

/// Renders `rows` under `headers` in TiUP's style. Cells may carry ANSI colour codes: widths
/// are measured without them.
pub fn tiup_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().map(Cell::new));
    table.add_row(headers.iter().map(|h| Cell::new("-".repeat(h.len()))));
    for row in rows {
        table.add_row(row.iter().map(|c| Cell::new(c).set_alignment(CellAlignment::Left)));
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.lines().map(|line| line.trim_end().to_owned()).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn looks_like_tiup() {
        let out = super::tiup_table(
            &["ID", "Role"],
            &[vec!["127.0.0.21:8261".into(), "dm-master (patched)".into()]],
        );
        assert_eq!(
            out,
            "ID               Role\n--               ----\n127.0.0.21:8261  dm-master (patched)"
        );
    }
}
