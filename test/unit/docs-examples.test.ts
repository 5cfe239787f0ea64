// docs/scale-out.md shows the files of docs/examples/ that the BGP lab runs:
// each must appear there whole, as a fenced block, so the page cannot drift
// from what the lab tests. Their {{NAME}} fields must be the documented ones.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const examples = path.join(root, 'docs', 'examples');
const page = fs.readFileSync(path.join(root, 'docs', 'scale-out.md'), 'utf8');
const files = fs.readdirSync(examples).sort();

t.test('every file in docs/examples/ is shown whole in docs/scale-out.md', async (t) => {
  t.ok(files.length >= 5, `${files.length} example files`);
  for (const file of files) {
    const text = fs.readFileSync(path.join(examples, file), 'utf8');
    const fenced = ['', 'sh'].some((lang) => page.includes(`\`\`\`${lang}\n${text}\`\`\`\n`));
    t.ok(fenced, `${file} appears verbatim, as a fenced block`);
  }
});

t.test('the configuration files use only the address fields the page documents', async (t) => {
  // The first column of the table of fields on the page: `{{VIP4}}`, `{{VIP6}}`
  const documented = new Set([...page.matchAll(/^\| (`\{\{[A-Z0-9_]+\}\}`(?:, )?)+ \|/gm)]
    .flatMap((row) => [...row[0].matchAll(/\{\{([A-Z0-9_]+)\}\}/g)].map((m) => m[1])));
  for (const file of files.filter((f) => f.endsWith('.conf'))) {
    const fields = [...fs.readFileSync(path.join(examples, file), 'utf8').matchAll(/\{\{([A-Z0-9_]+)\}\}/g)].map((m) => m[1]);
    for (const field of new Set(fields)) t.ok(documented.has(field), `${file}: {{${field}}} is in the table of fields`);
  }
});

t.test('relay-vip.sh is executable, as the units run it', async (t) => {
  t.ok(fs.statSync(path.join(examples, 'relay-vip.sh')).mode & 0o111, 'relay-vip.sh has its execute bits');
});
