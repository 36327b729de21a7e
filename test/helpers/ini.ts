// Reads an ini file as supervisord does for what the tests need: [section] headers and key=value
// lines; lines starting with ; or # are comments.
export function parseIni(text: string): Map<string, Map<string, string>> {
  const sections = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith(';') || line.startsWith('#')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const equals = line.indexOf('=');
    if (!current || equals < 0) throw new Error(`not an ini line: ${line}`);
    current.set(line.slice(0, equals).trim(), line.slice(equals + 1).trim());
  }
  return sections;
}
