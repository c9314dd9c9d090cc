//! The terminal view of `podscope top` (ratatui): the pod table, a pod's
//! live events and top talkers, help. Runs on its own thread; draws from
//! samples and never touches the probes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row as TRow, Table, TableState, Wrap};
use ratatui::Frame;

use super::model::{self, Col, Row, Samples};
use super::Source;
use crate::cli::TopArgs;

/// Width of each column on screen.
fn width(c: Col, rows: &[Row]) -> u16 {
    let longest = |f: &dyn Fn(&Row) -> usize, min: usize, max: usize| {
        rows.iter().map(f).max().unwrap_or(0).clamp(min, max) as u16
    };
    match c {
        Col::Namespace => longest(&|r| r.namespace.len(), 9, 24),
        Col::Pod => longest(&|r| Col::Pod.cell(r).len(), 3, 32),
        Col::Node => longest(&|r| r.node.as_deref().map_or(1, str::len), 4, 20),
        Col::Cpu => 6,
        Col::Mem | Col::Tx | Col::Rx => 8,
        // Room for the sort marker after the header.
        _ => (c.header().len() + 1).max(6) as u16,
    }
}

/// The columns that fit in `avail` cells: names first, then the numbers in
/// order, dropping from the right, but never the sort column.
fn visible(rows: &[Row], avail: u16, sort: Col, all: &[Col]) -> (Vec<Col>, usize) {
    let mut cols: Vec<Col> = all.to_vec();
    let total = |cols: &[Col]| -> u16 { cols.iter().map(|c| width(*c, rows) + 1).sum::<u16>() + 2 };
    let mut hidden = 0;
    while total(&cols) > avail && cols.len() > 3 {
        let i = cols
            .iter()
            .rposition(|c| *c != sort && c.numeric())
            .unwrap_or(cols.len() - 1);
        cols.remove(i);
        hidden += 1;
    }
    (cols, hidden)
}

/// The table as plain text (`top --once`): every column.
pub fn plain_table(rows: &[Row], cols: &[Col]) -> String {
    let widths: Vec<usize> = cols.iter().map(|c| width(*c, rows) as usize).collect();
    let mut out = String::new();
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push(' ');
            }
            if cols[i].numeric() {
                s.push_str(&format!("{c:>w$}"));
            } else {
                s.push_str(&format!("{c:<w$}"));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(cols.iter().map(|c| c.header().to_string()).collect()));
    for r in rows {
        out.push_str(&line(cols.iter().map(|c| c.cell(r)).collect()));
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Table,
    Pod,
}

struct Ui {
    mode: Mode,
    /// Every column (sortable), in order.
    cols: Vec<Col>,
    sort: usize,
    reverse: bool,
    filter: String,
    editing: bool,
    paused: bool,
    help: bool,
    per_container: bool,
    table: TableState,
    rows: Vec<Row>,
    /// The opened pod's stream: lines from the end scrolled back.
    scroll: usize,
    stream_paused: Option<Vec<String>>,
    last_secs: f64,
    /// The last tick came late (the view was held up): by how much.
    gap: Option<Duration>,
}

impl Ui {
    fn sort_col(&self) -> Col {
        self.cols[self.sort]
    }

    fn shown(&self) -> Vec<Row> {
        let mut rows = model::filter(self.rows.clone(), &self.filter);
        model::sort(&mut rows, self.sort_col(), self.reverse);
        rows
    }
}

/// Runs the view until `q`, Ctrl-C, or the probe side stops.
pub fn run(mut src: Source, args: &TopArgs) -> Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = run_in(&mut terminal, &mut src, args);
    ratatui::restore();
    src.shared.stop.store(true, Ordering::Relaxed);
    result
}

fn run_in(terminal: &mut ratatui::DefaultTerminal, src: &mut Source, args: &TopArgs) -> Result<()> {
    let cols = model::columns(src.is_remote());
    let mut ui = Ui {
        mode: Mode::Table,
        // Busiest by CPU first.
        sort: cols.iter().position(|c| *c == Col::Cpu).unwrap_or(0),
        cols,
        reverse: false,
        filter: String::new(),
        editing: false,
        paused: false,
        help: false,
        per_container: args.containers,
        table: TableState::default().with_selected(Some(0)),
        rows: Vec::new(),
        scroll: 0,
        stream_paused: None,
        last_secs: 0.0,
        gap: None,
    };
    src.pods();
    let start = src.sample();
    let mut prev: Samples = start.samples.clone();
    let mut prev_at = start.at;
    let mut next = prev_at + args.interval;
    // Drawn after a refresh, a key or a resize only: an idle screen costs nothing.
    let mut dirty = true;
    loop {
        if src.shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = Instant::now();
        if now >= next {
            dirty = true;
            let late = now.duration_since(next);
            ui.gap = (late > args.interval / 2).then_some(late);
            let pods = src.pods().to_vec();
            let cur = src.sample();
            let secs = cur.at.duration_since(prev_at).as_secs_f64();
            if !ui.paused {
                ui.rows = model::rows(
                    &pods,
                    &start.samples,
                    &prev,
                    &cur.samples,
                    secs,
                    ui.per_container,
                );
                if let Some(n) = &src.nodes {
                    model::with_nodes(&mut ui.rows, n, &src.usage);
                }
                ui.last_secs = secs;
            }
            prev = cur.samples;
            prev_at = cur.at;
            next = prev_at + args.interval;
        }
        // The opened pod's stream moves between refreshes.
        if dirty || ui.mode == Mode::Pod {
            terminal.draw(|f| draw(f, &mut ui, src))?;
            dirty = false;
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        if event::poll(wait)? {
            dirty = true;
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press && key(&mut ui, src, k) => {
                    return Ok(());
                }
                // A resize redraws on the next pass.
                _ => {}
            }
        }
    }
}

/// Handles one key; true to quit.
fn key(ui: &mut Ui, src: &Source, k: KeyEvent) -> bool {
    if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
        return true;
    }
    if ui.editing {
        match k.code {
            KeyCode::Enter => ui.editing = false,
            KeyCode::Esc => {
                ui.editing = false;
                ui.filter.clear();
            }
            KeyCode::Backspace => {
                ui.filter.pop();
            }
            KeyCode::Char(c) => ui.filter.push(c),
            _ => {}
        }
        ui.table.select(Some(0));
        return false;
    }
    if ui.help {
        ui.help = false;
        return false;
    }
    match ui.mode {
        Mode::Table => match k.code {
            KeyCode::Char('q') => return true,
            KeyCode::Char('?') | KeyCode::Char('h') => ui.help = true,
            KeyCode::Char('/') => {
                ui.editing = true;
                ui.filter.clear();
            }
            KeyCode::Esc => ui.filter.clear(),
            KeyCode::Char('p') | KeyCode::Char(' ') => ui.paused = !ui.paused,
            KeyCode::Char('c') => ui.per_container = !ui.per_container,
            KeyCode::Char('>') | KeyCode::Right | KeyCode::Tab => {
                ui.sort = (ui.sort + 1) % ui.cols.len();
            }
            KeyCode::Char('<') | KeyCode::Left | KeyCode::BackTab => {
                ui.sort = (ui.sort + ui.cols.len() - 1) % ui.cols.len();
            }
            KeyCode::Char('r') => ui.reverse = !ui.reverse,
            KeyCode::Down | KeyCode::Char('j') => ui.table.select_next(),
            KeyCode::Up | KeyCode::Char('k') => ui.table.select_previous(),
            KeyCode::PageDown => ui.table.scroll_down_by(10),
            KeyCode::PageUp => ui.table.scroll_up_by(10),
            KeyCode::Enter => {
                let rows = ui.shown();
                if let Some(r) = ui.table.selected().and_then(|i| rows.get(i)) {
                    src.shared.open(Some((r.namespace.clone(), r.pod.clone())));
                    ui.mode = Mode::Pod;
                    ui.scroll = 0;
                    ui.stream_paused = None;
                }
            }
            _ => {}
        },
        Mode::Pod => match k.code {
            KeyCode::Char('q') | KeyCode::Esc | KeyCode::Backspace => {
                src.shared.open(None);
                ui.mode = Mode::Table;
            }
            KeyCode::Char('?') | KeyCode::Char('h') => ui.help = true,
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                ui.stream_paused = match ui.stream_paused {
                    Some(_) => None,
                    None => Some(src.shared.with_focus(|f| f.lines.iter().cloned().collect())),
                };
            }
            KeyCode::Up | KeyCode::Char('k') => ui.scroll += 1,
            KeyCode::Down | KeyCode::Char('j') => ui.scroll = ui.scroll.saturating_sub(1),
            KeyCode::PageUp => ui.scroll += 10,
            KeyCode::PageDown => ui.scroll = ui.scroll.saturating_sub(10),
            KeyCode::End => ui.scroll = 0,
            _ => {}
        },
    }
    false
}

fn header(ui: &Ui, src: &Source, pods: usize) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!(
            "podscope top  {} {}  {} pods  every {}  probes {}",
            if src.is_remote() { "hub" } else { "node" },
            src.node,
            pods,
            humantime::format_duration(src.interval),
            src.probes
        ),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if ui.paused {
        spans.push(Span::styled(
            "  PAUSED",
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ));
    }
    let lost: Vec<String> = src
        .shared
        .losses()
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    if !lost.is_empty() {
        spans.push(Span::styled(
            format!("  LOST {}", lost.join(", ")),
            Style::new().fg(Color::White).bg(Color::Red),
        ));
    }
    if let Some(g) = ui.gap {
        spans.push(Span::styled(
            format!("  GAP {:.1}s", g.as_secs_f64()),
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ));
    }
    let gaps = src.shared.gaps.load(Ordering::Relaxed);
    if gaps > 0 {
        spans.push(Span::styled(
            format!("  NOT DELIVERED {gaps} (hub/agent queues full)"),
            Style::new().fg(Color::White).bg(Color::Red),
        ));
    }
    if let Some(e) = &src.listing_error {
        spans.push(Span::styled(
            format!("  pod listing failed: {e}"),
            Style::new().fg(Color::Yellow),
        ));
    }
    if !src.failed.is_empty() {
        let names: Vec<&str> = src.failed.iter().map(|(p, _)| p.name()).collect();
        spans.push(Span::styled(
            format!("  not loaded: {}", names.join(",")),
            Style::new().fg(Color::Yellow),
        ));
    }
    Line::from(spans)
}

fn draw(f: &mut Frame, ui: &mut Ui, src: &Source) {
    let [top, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let rows = ui.shown();
    f.render_widget(Paragraph::new(header(ui, src, ui.rows.len())), top);
    match ui.mode {
        Mode::Table => draw_table(f, ui, &rows, body, foot),
        Mode::Pod => draw_pod(f, ui, src, body, foot),
    }
    if ui.help {
        draw_help(f);
    }
}

fn draw_table(f: &mut Frame, ui: &mut Ui, rows: &[Row], body: Rect, foot: Rect) {
    let sort = ui.sort_col();
    let (cols, hidden) = visible(rows, body.width, sort, &ui.cols);
    let head = TRow::new(cols.iter().map(|c| {
        let mut h = c.header().to_string();
        let style = if *c == sort {
            h.push(if ui.reverse { '^' } else { 'v' });
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        Cell::from(h).style(style)
    }));
    let body_rows = rows.iter().map(|r| {
        TRow::new(cols.iter().map(|c| {
            let text = c.cell(r);
            if c.numeric() {
                Cell::from(Line::from(text).right_aligned())
            } else {
                Cell::from(text)
            }
        }))
    });
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|c| Constraint::Length(width(*c, rows)))
        .collect();
    let table = Table::new(body_rows, widths)
        .header(head)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    match ui.table.selected() {
        _ if rows.is_empty() => ui.table.select(None),
        None => ui.table.select(Some(0)),
        Some(i) if i >= rows.len() => ui.table.select(Some(rows.len() - 1)),
        Some(_) => {}
    }
    f.render_stateful_widget(table, body, &mut ui.table);
    if rows.is_empty() {
        let msg = if ui.filter.is_empty() {
            "no pods match the selection (yet)".to_string()
        } else {
            format!("no pod matches the filter '{}'", ui.filter)
        };
        f.render_widget(
            Paragraph::new(msg),
            Rect {
                y: body.y + 2,
                height: 1,
                ..body
            },
        );
    }
    let footer = if ui.editing {
        format!("filter: {}_   (Enter keep, Esc clear)", ui.filter)
    } else {
        let mut s = String::new();
        if !ui.filter.is_empty() {
            s.push_str(&format!("[filter: {}] ", ui.filter));
        }
        if hidden > 0 {
            s.push_str(&format!("[{hidden} cols hidden: widen] "));
        }
        s.push_str(
            "q quit  Enter pod  </> sort  r reverse  / filter  c containers  p pause  ? help",
        );
        s
    };
    f.render_widget(
        Paragraph::new(footer).style(Style::new().fg(Color::Black).bg(Color::Gray)),
        foot,
    );
}

fn draw_pod(f: &mut Frame, ui: &mut Ui, src: &Source, body: Rect, foot: Rect) {
    let (pod, live, evicted, talkers, dropped) = src.shared.with_focus(|fo| {
        (
            fo.pod.clone().unwrap_or_default(),
            fo.lines.iter().cloned().collect::<Vec<String>>(),
            fo.evicted,
            fo.talkers.clone(),
            fo.talkers_dropped,
        )
    });
    let lines = ui.stream_paused.clone().unwrap_or(live);
    let [summary, stream, talk] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(7),
    ])
    .areas(body);
    let row = ui
        .rows
        .iter()
        .find(|r| r.namespace == pod.0 && r.pod == pod.1 && r.container.is_none());
    let sum = match row {
        Some(r) => format!(
            "{}/{}  CPU {}%  MEM {}  exec/s {}  conn/s {}  bio/s {}  req/s {}  execs {} opens {} connects {} accepts {}",
            r.namespace,
            r.pod,
            Col::Cpu.cell(r),
            Col::Mem.cell(r),
            Col::Exec.cell(r),
            Col::Conn.cell(r),
            Col::Bio.cell(r),
            Col::Req.cell(r),
            r.totals.execs,
            r.totals.file_opens,
            r.totals.tcp_connects,
            r.totals.tcp_accepts
        ),
        None => format!("{}/{}", pod.0, pod.1),
    };
    f.render_widget(
        Paragraph::new(sum).style(Style::new().add_modifier(Modifier::BOLD)),
        summary,
    );
    // The newest lines at the bottom, `scroll` lines back from the end.
    let h = stream.height.saturating_sub(2) as usize;
    let end = lines.len().saturating_sub(ui.scroll.min(lines.len()));
    let begin = end.saturating_sub(h);
    let shown: Vec<Line> = lines[begin..end]
        .iter()
        .map(|l| Line::from(l.clone()))
        .collect();
    let mut title = format!(" events ({} kept", lines.len());
    if evicted > 0 {
        title.push_str(&format!(", {evicted} older dropped"));
    }
    title.push(')');
    if ui.stream_paused.is_some() {
        title.push_str(" PAUSED");
    }
    if ui.scroll > 0 {
        title.push_str(&format!(" {} lines back", ui.scroll));
    }
    title.push(' ');
    f.render_widget(
        Paragraph::new(shown).block(Block::bordered().title(title)),
        stream,
    );
    let ips = src.pod_ips();
    let mut peers: Vec<(String, u64, u64)> = talkers
        .into_iter()
        .map(|(k, (b, r))| (ips.get(&k).cloned().unwrap_or(k), b, r))
        .collect();
    peers.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then(a.0.cmp(&b.0)));
    let trows = peers.iter().take(5).map(|(p, b, r)| {
        TRow::new(vec![
            Cell::from(p.clone()),
            Cell::from(Line::from(model::human_bytes(*b)).right_aligned()),
            Cell::from(Line::from(r.to_string()).right_aligned()),
        ])
    });
    let mut ttitle = " top talkers (TCP bytes of closed connections, requests) ".to_string();
    if dropped > 0 {
        ttitle.push_str(&format!("{dropped} peers not kept "));
    }
    let t = Table::new(
        trows,
        [
            Constraint::Min(20),
            Constraint::Length(10),
            Constraint::Length(8),
        ],
    )
    .header(
        TRow::new(vec!["PEER", "BYTES", "REQUESTS"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(ttitle));
    f.render_widget(t, talk);
    f.render_widget(
        Paragraph::new("Esc back  p pause  Up/Down PgUp/PgDn scroll  End newest  ? help")
            .style(Style::new().fg(Color::Black).bg(Color::Gray)),
        foot,
    );
}

fn draw_help(f: &mut Frame) {
    let text = "\
Table
  Up/Down j/k  select a pod         Enter    its events and talkers
  < > Tab      sort column          r        reverse the order
  /            filter by name       Esc      clear the filter
  c            pods / containers    p Space  pause the table
  q Ctrl-C     quit                 ?        this help
Pod view
  Up/Down PgUp/PgDn scroll  End newest  p pause  Esc back

Rates: per second over the last interval. TCP bytes count when a
connection closes. p99: the histogram bucket's upper bound.
Any key closes this help.";
    let area = f.area();
    let w = 72.min(area.width);
    let h = 15.min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" help ")),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use podscope_export::ContainerSample;
    use std::collections::HashMap;

    fn rows() -> Vec<Row> {
        let mut s = ContainerSample::new("shop", "web-0", "app");
        s.execs = 5;
        let cur = model::index(vec![s]);
        model::rows(&[], &HashMap::new(), &HashMap::new(), &cur, 1.0, false)
    }

    #[test]
    fn columns_fit_80_cells_and_keep_the_sort_column() {
        let r = rows();
        let all = model::columns(false);
        let (cols, hidden) = visible(&r, 80, Col::ReqP99, &all);
        assert!(cols.contains(&Col::ReqP99));
        assert!(cols.contains(&Col::Pod));
        assert!(hidden > 0);
        let used: u16 = cols.iter().map(|c| width(*c, &r) + 1).sum::<u16>() + 2;
        assert!(used <= 80, "{used}");
        let (every, none) = visible(&r, 400, Col::Cpu, &all);
        assert_eq!((every.len(), none), (all.len(), 0));
    }

    #[test]
    fn plain_table_has_every_column() {
        let t = plain_table(&rows(), &model::columns(false));
        let mut lines = t.lines();
        let head = lines.next().unwrap();
        for c in model::columns(false) {
            assert!(head.contains(c.header()), "{head}");
        }
        let row = lines.next().unwrap();
        assert!(row.starts_with("shop") && row.contains("web-0"), "{row}");
        assert!(row.split_whitespace().any(|w| w == "5.0"), "{row}");
    }
}
