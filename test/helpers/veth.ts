// A peer on the other end of a veth pair: the test process stays in the root namespace at
// 10.213.<subnet>.1 and the peer namespace holds 10.213.<subnet>.2. Each test file passes its own
// subnet number so files can run in parallel. `vanish()` makes the peer silently disappear the way
// testing.md prescribes: nftables drops inside the *peer's* namespace (netdev ingress on its veth
// plus inet output), so no RST and no ICMP ever comes back.
import { execFileSync } from 'node:child_process';
import { Netns } from './netns.js';
import { vanishRules } from '../../src/demo/lab.js';

export class VethPeer {
  readonly ns: Netns;
  readonly hostIf: string;
  readonly peerIf = 'st-peer';
  readonly hostAddr: string;
  readonly peerAddr: string;

  /** @param tag short file tag (letters); @param subnet 1..250, unique per test file */
  constructor(
    tag: string,
    readonly subnet: number,
  ) {
    this.ns = new Netns(tag);
    // Interface names are global in the root namespace and at most 15 characters.
    this.hostIf = `st${subnet}h${process.pid % 100000}`;
    this.hostAddr = `10.213.${subnet}.1`;
    this.peerAddr = `10.213.${subnet}.2`;
  }

  create(): this {
    this.ns.create();
    execFileSync('ip', ['link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.peerIf, 'netns', this.ns.name]);
    execFileSync('ip', ['addr', 'add', `${this.hostAddr}/24`, 'dev', this.hostIf]);
    execFileSync('ip', ['link', 'set', this.hostIf, 'up']);
    execFileSync('ip', ['-n', this.ns.name, 'addr', 'add', `${this.peerAddr}/24`, 'dev', this.peerIf]);
    execFileSync('ip', ['-n', this.ns.name, 'link', 'set', this.peerIf, 'up']);
    return this;
  }

  /** The peer drops every packet in and out, silently: it has vanished. */
  vanish(): void {
    execFileSync('ip', ['netns', 'exec', this.ns.name, 'nft', '-f', '-'], { input: vanishRules(this.peerIf) });
  }

  /** Undoes {@link vanish}. */
  restore(): void {
    for (const table of ['netdev st_vanish', 'inet st_vanish']) {
      try {
        execFileSync('ip', ['netns', 'exec', this.ns.name, 'nft', 'delete', 'table', ...table.split(' ')], { stdio: 'ignore' });
      } catch {
        // not there
      }
    }
  }

  async destroy(): Promise<void> {
    await this.ns.destroy(); // deleting the namespace deletes the peer end, and so the pair
    try {
      execFileSync('ip', ['link', 'del', this.hostIf], { stdio: 'ignore' });
    } catch {
      // already gone with the namespace
    }
  }
}
