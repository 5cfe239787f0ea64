// Reading nftables as `nft -j` lists it (JSON, libnftables-json(5)): the text
// of `nft list` changes with nft's version and pretty-printing, the JSON
// schema does not. Parsing is pure (unit-tested); reading runs nft.
import { tryCommand } from './shell';
import { RelayError } from './errors';

/** One rule as `nft -j list ...` gives it: where it is and its expressions. */
export interface NftRule {
  readonly family: string;
  readonly table: string;
  readonly chain: string;
  readonly handle?: number;
  readonly expr: readonly Record<string, unknown>[];
}

/** A rule that sets a constant packet mark, and what it matches, in nft's words. */
export interface NftMarkRule {
  readonly mark: number;
  readonly where: string;
  /** e.g. 'socket transparent 1 meta mark set 0x5e1a', for the operator to recognise. */
  readonly text: string;
  readonly tproxy: boolean;
}

/** The rules in a `nft -j list ruleset|table` document; [] for anything else. */
export function parseNftRules(json: string): NftRule[] {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    return [];
  }
  const items = (doc as { nftables?: unknown })?.nftables;
  if (!Array.isArray(items)) return [];
  return items.flatMap((item) => {
    const rule = (item as { rule?: Partial<NftRule> })?.rule;
    return rule && Array.isArray(rule.expr) ? [{ family: String(rule.family), table: String(rule.table),
      chain: String(rule.chain), handle: rule.handle, expr: rule.expr }] : [];
  });
}

/** The constant marks that rules set (`meta mark set N`, and TPROXY's mark), in ruleset order. */
export function markRules(rules: readonly NftRule[]): NftMarkRule[] {
  return rules.flatMap((rule) => {
    const mark = rule.expr.map(constantMarkSet).find((m) => m !== undefined);
    if (mark === undefined) return [];
    return [{ mark, where: `${rule.family} ${rule.table} ${rule.chain}`, text: rule.expr.map(describeExpr).filter((s) => s).join(' '),
      tproxy: rule.expr.some((e) => 'tproxy' in e) }];
  });
}

function constantMarkSet(expr: Record<string, unknown>): number | undefined {
  const mangle = expr.mangle as { key?: { meta?: { key?: string } }; value?: unknown } | undefined;
  return mangle?.key?.meta?.key === 'mark' && typeof mangle.value === 'number' ? mangle.value : undefined;
}

/** A short rendering of the expressions an operator writes for transparent proxying; others as their kind. */
export function describeExpr(expr: Record<string, unknown>): string {
  const [kind, body] = Object.entries(expr)[0] ?? ['', undefined];
  const b = body as Record<string, unknown> | null;
  switch (kind) {
    case 'match': {
      const right = b?.right;
      return `${describeOperand(b?.left)} ${b?.op === '==' ? '' : `${String(b?.op)} `}${describeOperand(right)}`;
    }
    case 'mangle':
      return `${describeOperand(b?.key)} set ${typeof b?.value === 'number' ? hex(b.value) : describeOperand(b?.value)}`;
    case 'tproxy':
      return `tproxy ${b?.family ? `${String(b.family)} ` : ''}to ${b?.addr ? String(b.addr) : ''}:` +
        `${typeof b?.port === 'object' && b.port !== null ? '(a map)' : String(b?.port ?? '')}`;
    case 'accept': case 'drop': case 'return':
      return kind;
    case 'jump': case 'goto':
      return `${kind} ${String((b as { target?: string })?.target)}`;
    case 'counter':
      return '';
    default:
      return kind;
  }
}

function describeOperand(operand: unknown): string {
  if (operand === null || typeof operand !== 'object') return String(operand);
  const [kind, body] = Object.entries(operand as Record<string, unknown>)[0] ?? ['', undefined];
  const b = body as Record<string, unknown>;
  switch (kind) {
    case 'meta': return `meta ${String(b.key)}`;
    case 'socket': return `socket ${String(b.key)}`;
    case 'ct': return `ct ${String(b.key)}`;
    case 'payload': return `${String(b.protocol)} ${String(b.field)}`;
    case 'exthdr': return `${String(b.name)} ${String(b.field)}`;
    case 'prefix': return `${String(b.addr)}/${String(b.len)}`;
    case 'set': return `{ ${(body as unknown[]).map(describeOperand).join(', ')} }`;
    case '&': return `${(body as unknown[]).map(describeOperand).join(' & ')}`;
    default: return kind;
  }
}

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/**
 * `nft -j list ...`: its rules, or undefined when the object does not exist.
 * Throws when nftables cannot be read at all (no CAP_NET_ADMIN).
 */
export function listNft(what: readonly string[]): NftRule[] | undefined {
  const listed = tryCommand(['nft', '-j', 'list', ...what]);
  if (!listed.ok && /Operation not permitted|Permission denied/i.test(listed.stderr)) {
    throw new RelayError('ERR_PRIVILEGE', `cannot read nftables: ${listed.stderr.split('\n')[0]}`,
      'reading and changing relay\'s routes needs CAP_NET_ADMIN');
  }
  return listed.ok ? parseNftRules(listed.stdout) : undefined;
}
