// A plugin that does nothing: what one call costs in JavaScript (bench only).

import { Info, Plugin } from 'evhost-plugin';

export default class Passthrough extends Plugin {
  constructor(config) {
    super(config);
    this.info = new Info('passthrough', '0.1.0', ['*']);
  }

  handle(_event) {
    return [];
  }
}
