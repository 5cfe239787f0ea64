// Smooth weighted round robin, as nginx does it (ngx_http_upstream_round_robin.c):
// weights 5,1,1 give a a b a c a a rather than a a a a a b c, so a heavy
// backend's share arrives spread out instead of in bursts. Exact over every
// cycle of sum(weights) picks.
import type { Member, Strategy } from './member';

export function smoothRoundRobin(members: readonly Member[]): Strategy {
  // current[i] grows by weight[i] on every pick and drops by the total of
  // the up weights when i is chosen; the highest is chosen.
  const current = new Array<number>(members.length).fill(0);
  return {
    pick() {
      let best = -1;
      let total = 0;
      for (let i = 0; i < members.length; i++) {
        const member = members[i];
        if (!member.up) continue; // a down member's credit waits, frozen, until it is back
        current[i] += member.weight;
        total += member.weight;
        if (best < 0 || current[i] > current[best]) best = i;
      }
      if (best < 0) return undefined;
      current[best] -= total;
      return members[best];
    },
    healthChanged() {},
  };
}
