// Source hashing: hash(client address) picks the backend, so one client
// keeps one backend, and relay hosts with the same backends agree.
// Map-based like HAProxy's default `balance source`: a change in the up set
// moves most clients. Use maglev where that matters.
import { clientHash } from './hash';
import { Client, Member, Strategy, byName } from './member';

export function sourceHash(members: readonly Member[], hashPort: boolean): Strategy {
  const sorted = byName(members);
  // Each up member appears weight times; hash % length picks a slot.
  // Rebuilt on each health change: at most members x MAX_WEIGHT entries.
  let wheel = buildWheel(sorted);
  return {
    pick(client: Client) {
      if (wheel.length === 0) return undefined;
      const hash = clientHash(client.address, hashPort ? client.port : undefined);
      return wheel[hash % wheel.length];
    },
    healthChanged() {
      wheel = buildWheel(sorted);
    },
  };
}

function buildWheel(sorted: readonly Member[]): Member[] {
  return sorted.filter((m) => m.up).flatMap((m) => new Array<Member>(m.weight).fill(m));
}
