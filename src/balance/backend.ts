// Weighted backends and the --backend flag value "ADDR:PORT[,weight=N]". Pure.
import { Endpoint, formatEndpoint, parseEndpoint } from '../addr';
import { ConfigError, echo } from '../errors';

export interface WeightedBackend {
  readonly endpoint: Endpoint;
  /** Share of new clients relative to the other backends: an integer 1-MAX_WEIGHT. */
  readonly weight: number;
}

export const DEFAULT_WEIGHT = 1;
/**
 * HAProxy's bound. It keeps a round-robin cycle, a source-hash wheel and a
 * maglev fill round small, and 256 steps are finer than any operator needs.
 */
export const MAX_WEIGHT = 256;

/** A frozen backend; throws ConfigError unless weight is an integer 1-MAX_WEIGHT. */
export function weightedBackend(endpoint: Endpoint, weight = DEFAULT_WEIGHT): WeightedBackend {
  if (!Number.isInteger(weight) || weight < 1 || weight > MAX_WEIGHT) {
    throw new ConfigError(
      `backend ${backendName(endpoint)}: weight must be an integer 1-${MAX_WEIGHT}: got ${weight}`,
    );
  }
  return Object.freeze({ endpoint, weight });
}

/**
 * Parse "198.51.100.20:80", "198.51.100.20:80,weight=3" or
 * "[2001:db8::20]:80,weight=2". The only option is weight; a repeated or
 * unknown option is an error rather than silently ignored.
 */
export function parseBackend(text: string, what = 'backend'): WeightedBackend {
  const [target, ...options] = text.split(',');
  const endpoint = parseEndpoint(target, what);
  let weight: number | undefined;
  for (const option of options) {
    const match = /^weight=(.*)$/.exec(option);
    if (!match) {
      throw new ConfigError(
        `${what} '${echo(text)}': unknown option '${echo(option)}' (the only option is weight=N)`,
        'write ADDR:PORT or ADDR:PORT,weight=N, e.g. 198.51.100.20:80,weight=3',
      );
    }
    if (weight !== undefined) throw new ConfigError(`${what} '${echo(text)}': weight given twice`);
    weight = parseWeight(match[1], text, what);
  }
  return weightedBackend(endpoint, weight);
}

function parseWeight(value: string, text: string, what: string): number {
  // Digits only: Number() alone would accept '', ' 3', '0x10' and '1e2'.
  const weight = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(weight >= 1 && weight <= MAX_WEIGHT)) {
    throw new ConfigError(`${what} '${echo(text)}': weight must be an integer 1-${MAX_WEIGHT}: got '${echo(value)}'`);
  }
  return weight;
}

/**
 * "198.51.100.20:80" or "[2001:db8::20]:80", from the normalized address.
 * This is a backend's identity: hash-based algorithms sort and hash by it,
 * so relay hosts with the same backend list agree whatever the list's order.
 */
export function backendName(endpoint: Endpoint): string {
  return formatEndpoint(endpoint.address, endpoint.port);
}
