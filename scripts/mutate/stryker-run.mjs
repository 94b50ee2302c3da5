#!/usr/bin/env node
// Runs Stryker's CLI under its own process title (`ctsab-mutate`, not `stryker`), so a
// `pkill stryker` aimed at another run on a shared machine does not end this one.
//   nice -n 10 node scripts/mutate/stryker-run.mjs run stryker.table.config.mjs --mutate FILE
import { StrykerCli } from '@stryker-mutator/core';

process.title = 'ctsab-mutate';
new StrykerCli(process.argv).run();
