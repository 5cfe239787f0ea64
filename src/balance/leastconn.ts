// Least connections: the up member with the lowest active/weight. Suits
// connections of uneven length, where round robin piles long ones up on
// whichever backends happen to draw them. Counts come from the data path's
// onOpen/onClose.
import type { Member, Strategy } from './member';

export function leastConnections(members: readonly Member[]): Strategy {
  // Ties are common (every count is 0 when idle), so the scan for the lowest
  // starts just after the previous choice: equal members take turns.
  let start = 0;
  return {
    pick() {
      let best: Member | undefined;
      let bestIndex = 0;
      for (let k = 0; k < members.length; k++) {
        const i = (start + k) % members.length;
        const member = members[i];
        if (member.up && (best === undefined || fewer(member, best))) {
          best = member;
          bestIndex = i;
        }
      }
      if (best !== undefined) start = (bestIndex + 1) % members.length;
      return best;
    },
    healthChanged() {},
  };
}

/** a.active/a.weight < b.active/b.weight, cross-multiplied to stay in integers. */
function fewer(a: Member, b: Member): boolean {
  return a.active * b.weight < b.active * a.weight;
}
