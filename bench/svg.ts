/** A hand-written SVG line chart: throughput against worker count, one line per workload. */
import type { BenchReport } from './run.js';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function chartSvg(r: BenchReport): string {
  const series = new Map<string, { x: number; y: number; lo: number; hi: number }[]>();
  for (const w of r.workloads) {
    if (w.unit === 'ms') continue;
    const key = `${w.name} (${w.tracker})`;
    if (!series.has(key)) series.set(key, []);
    series.get(key)!.push({ x: w.workers, y: w.rate / 1e6, lo: w.min / 1e6, hi: w.max / 1e6 });
  }
  const W = 760, H = 440, L = 70, RM = 250, T = 40, B = 50;
  const pw = W - L - RM, ph = H - T - B;
  const xs = [...new Set([...series.values()].flat().map((p) => p.x))].sort((a, b) => a - b);
  const xmax = Math.max(2, ...xs);
  const ymaxRaw = Math.max(0.1, ...[...series.values()].flat().map((p) => p.hi));
  const step = niceStep(ymaxRaw / 5);
  const ymax = Math.ceil(ymaxRaw / step) * step;
  const X = (x: number): number => L + ((x - 1) / (xmax - 1)) * pw;
  const Y = (y: number): number => T + ph - (y / ymax) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${L}" y="22" font-size="15" font-weight="bold">conntrack-sab throughput against worker threads (${r.quick ? 'quick' : 'full'} bench)</text>`);
  for (let y = 0; y <= ymax + 1e-9; y += step) {
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${Y(y).toFixed(1)}" y2="${Y(y).toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${L - 6}" y="${(Y(y) + 4).toFixed(1)}" text-anchor="end">${+y.toFixed(3)}</text>`);
  }
  for (let x = 1; x <= xmax; x++) {
    out.push(`<line x1="${X(x).toFixed(1)}" x2="${X(x).toFixed(1)}" y1="${T}" y2="${T + ph}" stroke="#eee"/>`);
    out.push(`<text x="${X(x).toFixed(1)}" y="${T + ph + 18}" text-anchor="middle">${x}</text>`);
  }
  out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="#333"/><line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="#333"/>`);
  out.push(`<text x="${L + pw / 2}" y="${H - 12}" text-anchor="middle">worker threads</text>`);
  out.push(`<text x="18" y="${T + ph / 2}" text-anchor="middle" transform="rotate(-90 18 ${T + ph / 2})">million packets (or connections) per second</text>`);
  let k = 0;
  for (const [name, pts] of series) {
    const c = COLORS[k % COLORS.length]!;
    const dash = name.includes('(map)') ? ' stroke-dasharray="2,3"' : name.includes('(sharedmap)') ? ' stroke-dasharray="6,4"' : '';
    pts.sort((a, b) => a.x - b.x);
    if (pts.length > 1) out.push(`<polyline fill="none" stroke="${c}" stroke-width="2"${dash} points="${pts.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) {
      out.push(`<line x1="${X(p.x).toFixed(1)}" x2="${X(p.x).toFixed(1)}" y1="${Y(p.lo).toFixed(1)}" y2="${Y(p.hi).toFixed(1)}" stroke="${c}"/>`);
      out.push(`<circle cx="${X(p.x).toFixed(1)}" cy="${Y(p.y).toFixed(1)}" r="3.5" fill="${c}"/>`);
    }
    const ly = T + 10 + k * 18;
    out.push(`<line x1="${L + pw + 15}" x2="${L + pw + 45}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${L + pw + 50}" y="${ly + 4}">${esc(name)}</text>`);
    k++;
  }
  out.push(`<text x="${L + pw + 15}" y="${T + 14 + k * 18}" fill="#666">solid: ours, dashed: sharedmap,</text>`);
  out.push(`<text x="${L + pw + 15}" y="${T + 28 + k * 18}" fill="#666">dotted: Map (one thread); bars: min..max</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function niceStep(x: number): number {
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}
