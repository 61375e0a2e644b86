// What a test needs from the machine. In CI a missing tool or privilege fails the test (the
// kernel is the thing under test); elsewhere the test is skipped with the reason.
import { execFileSync } from 'node:child_process';

export const inCI = process.env.CI === 'true' || process.env.CI === '1';

function has(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Whether the tools are present and we are root; in CI always true so the tests run and fail loudly. */
export function canUse(...tools: string[]): boolean {
  if (inCI) return true;
  const ok = process.getuid?.() === 0 && tools.every(has);
  if (!ok) console.warn(`skipping: needs root and ${tools.join(', ')}`);
  return ok;
}
