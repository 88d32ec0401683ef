/** uPlot is loaded by its own <script> (the IIFE build from node_modules) as a global. */
declare const uPlot: typeof import('uplot');
