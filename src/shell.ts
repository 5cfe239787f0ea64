// Running the host tools relay drives (ip, nft). Synchronous on purpose: these
// run at set-up time, never on the data path.
import { execFileSync } from 'node:child_process';
import { RelayError } from './errors';

export interface CommandResult {
  ok: boolean;
  stdout: string;
  stderr: string;
}

export function tryCommand(argv: readonly string[], input?: string): CommandResult {
  try {
    const stdout = execFileSync(argv[0], argv.slice(1), {
      input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: 30_000,
    });
    return { ok: true, stdout, stderr: '' };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: string; message: string };
    if (e.code === 'ENOENT') {
      return { ok: false, stdout: '', stderr: `${argv[0]}: command not found` };
    }
    return { ok: false, stdout: e.stdout ?? '', stderr: (e.stderr ?? e.message).trim() };
  }
}

/** A command's JSON array output (`ip -j ...`); [] when it fails or prints something else. */
export function listJson(argv: readonly string[]): Record<string, unknown>[] {
  const result = tryCommand(argv);
  if (!result.ok) return [];
  try {
    const parsed = JSON.parse(result.stdout || '[]');
    return Array.isArray(parsed) ? parsed : [];
  } catch {
    return [];
  }
}

/** Run a command; on failure throw an error quoting it and what it printed. */
export function runCommand(argv: readonly string[], input?: string, code = 'ERR_ROUTES'): string {
  const result = tryCommand(argv, input);
  if (!result.ok) {
    throw new RelayError(code, `'${formatCommand(argv)}' failed: ${result.stderr || 'no output'}`,
      result.stderr.includes('not found') ? missingToolHint(argv[0]) : undefined);
  }
  return result.stdout;
}

function missingToolHint(tool: string): string {
  const pkg = tool === 'nft' ? 'nftables' : tool === 'ip' ? 'iproute2' : tool;
  return `install it: apt-get install ${pkg}`;
}

export function formatCommand(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
}
