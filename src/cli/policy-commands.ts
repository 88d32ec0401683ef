/**
 * `virtmem policy set|show DOM`: the automatic memory policy's per-guest settings (floor,
 * ceiling, shares, on/off) and what it last did. The policy itself runs in the daemon.
 */
import { parseScaledKiB } from '../domain/size.js';
import { UsageError } from './args.js';
import type { Command } from './commands.js';


const sizeOpt = (text: string | undefined, what: string): number | null | undefined => {
  if (text === undefined) return undefined;
  if (text === 'default') return null;
  return parseScaledKiB(text, what);
};

export const POLICY_COMMANDS: Command[] = [
  {
    name: 'policy', summary: 'automatic memory policy: `policy set DOM [--enable|--disable] [--floor S] [--ceiling S] [--shares N]`, `policy show DOM`',
    positionals: ['action', 'domain'], required: 2, flags: ['enable', 'disable'], options: ['floor', 'ceiling', 'shares'],
    failPrefix: (a) => (a.positional.action === 'set' ? `Failed to set the memory policy of domain '${a.positional.domain}'` : null),
    async run(ctx) {
      const { action, domain } = ctx.args.positional as { action: string; domain: string };
      const has = (f: string): boolean => ctx.args.flags.has(f) || ctx.args.options.has(f);
      if (action === 'show') {
        for (const f of ['enable', 'disable', 'floor', 'ceiling', 'shares']) if (has(f)) throw new UsageError(`--${f} goes with 'policy set', not 'policy show'`);
        const doc = await ctx.driver.policy(domain);
        const s = doc.settings;
        const last = doc.last ?? null;
        if (ctx.json) return void ctx.out(JSON.stringify({ name: doc.name, ...s, configured: doc.configured, last }, null, 2) + '\n');
        const row = (k: string, v: string): string => `${(k + ':').padEnd(15)} ${v}\n`;
        const dflt = (k: 'floorKiB' | 'ceilingKiB' | 'shares'): string => (doc.configured?.[k] === undefined ? ' (default)' : '');
        ctx.out(row('Policy', s.enabled ? 'on' : 'off') + row('Floor', `${s.floorKiB} KiB${dflt('floorKiB')}`)
          + row('Ceiling', `${s.ceilingKiB} KiB${dflt('ceilingKiB')}`) + row('Shares', `${s.shares}${dflt('shares')}`)
          + row('Last decision', last
            ? `${last.at}: ${last.action === 'hold' ? 'held' : `${last.fromKiB} KiB -> ${last.targetKiB} KiB${last.action === 'failed' ? ' (failed)' : ''}`}; ${last.reason}`
            : 'none yet (the policy runs in `virtmem daemon`)') + '\n');
        return;
      }
      if (action !== 'set') throw new UsageError(`unknown policy action '${action}' (expected set or show)`);
      if (ctx.args.flags.has('enable') && ctx.args.flags.has('disable')) throw new UsageError('Options --enable and --disable are mutually exclusive');
      const sharesText = ctx.args.options.get('shares');
      let shares: number | null | undefined;
      if (sharesText !== undefined) {
        if (sharesText === 'default') shares = null;
        else if (!/^[0-9]{1,6}$/.test(sharesText)) throw new UsageError(`invalid shares '${sharesText}': expected a whole number from 1 to 50000`);
        else shares = Number(sharesText);
      }
      const change = {
        ...(ctx.args.flags.has('enable') ? { enabled: true } : ctx.args.flags.has('disable') ? { enabled: false } : {}),
        ...(ctx.args.options.has('floor') ? { floorKiB: sizeOpt(ctx.args.options.get('floor'), 'floor') } : {}),
        ...(ctx.args.options.has('ceiling') ? { ceilingKiB: sizeOpt(ctx.args.options.get('ceiling'), 'ceiling') } : {}),
        ...(shares !== undefined ? { shares } : {}),
      };
      if (Object.keys(change).length === 0) throw new UsageError("policy set needs at least one of --enable, --disable, --floor, --ceiling, --shares");
      const doc = await ctx.driver.setPolicy(domain, change);
      const s = doc.settings;
      if (ctx.json) return void ctx.out(JSON.stringify({ name: doc.name, ...s }, null, 2) + '\n');
      ctx.out(`Memory policy of domain '${doc.name}' ${s.enabled ? 'on' : 'off'}: floor ${s.floorKiB} KiB, ceiling ${s.ceilingKiB} KiB, shares ${s.shares}\n\n`);
    },
  },
];
