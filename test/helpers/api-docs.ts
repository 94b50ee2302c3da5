/**
 * Reads the emitted declarations of the package entry (dist/src/index.d.ts): which symbols it
 * exports, and whether each one's declaration carries a doc comment. No TypeScript API needed.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface ExportedSymbol {
  name: string;
  /** The .d.ts file holding its declaration (null: not found). */
  file: string | null;
  documented: boolean;
}

function reexports(text: string): { names: string[]; from: string }[] {
  const out: { names: string[]; from: string }[] = [];
  for (const m of text.matchAll(/export\s*\{([^}]*)\}\s*from\s*'([^']+)'/g)) {
    const names = m[1]!.split(',').map((s) => s.trim()).filter(Boolean)
      .map((s) => s.replace(/^type\s+/, '').split(/\s+as\s+/).pop()!.trim());
    out.push({ names, from: m[2]! });
  }
  return out;
}

function resolve(from: string, spec: string): string {
  return join(dirname(from), spec.replace(/\.js$/, '.d.ts'));
}

/** Find `name`'s declaration in `file` (following imports); return [file, documented] or null. */
function find(file: string, name: string, depth = 0): [string, boolean] | null {
  if (depth > 5) return null;
  const text = readFileSync(file, 'utf8');
  const decl = new RegExp(`^export (?:declare )?(?:abstract )?(?:class|function|const|let|interface|type|enum) ${name}\\b`, 'm');
  const m = decl.exec(text);
  if (m) {
    // The doc comment must end on the line just above (a blank line detaches it, as in editors).
    const before = text.slice(0, m.index);
    return [file, /\*\/[ \t]*\n[ \t]*$/.test(before)];
  }
  // Re-exported or imported from another module.
  for (const r of reexports(text)) if (r.names.includes(name)) return find(resolve(file, r.from), name, depth + 1);
  for (const im of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*'([^']+)'/g)) {
    const names = im[1]!.split(',').map((s) => s.trim().replace(/^type\s+/, ''));
    if (names.includes(name)) return find(resolve(file, im[2]!), name, depth + 1);
  }
  return null;
}

export function exportedSymbols(indexDts: string): ExportedSymbol[] {
  const out: ExportedSymbol[] = [];
  for (const r of reexports(readFileSync(indexDts, 'utf8'))) {
    for (const name of r.names) {
      const f = find(resolve(indexDts, r.from), name);
      out.push({ name, file: f ? f[0] : null, documented: f ? f[1] : false });
    }
  }
  return out;
}
