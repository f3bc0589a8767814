# plot.gp - bars per allocator, normalised to a baseline = 1.0 (glibc for the
# malloc rows), log scale.  bench.py calls it once per PNG:
#
#   gnuplot -e "data='x.dat'; out='x.png'; plot_title='...'; n=5; ymin=0.25; \
#               ymax=8; width=1200; ylab='speed vs glibc'" plot.gp
#
# data: a header line ("row" and one quoted name per allocator), then one
# line per cluster: a quoted label and n ratios (NaN where a run failed).
set terminal pngcairo size width,520 font "sans,10" noenhanced
set output out
set title plot_title
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border rgb "#404040"
set boxwidth 0.9
set logscale y 2
set yrange [ymin:ymax]
set ylabel ylab
set format y "%gx"
set grid ytics lc rgb "#d0d0d0"
set xtics rotate by 35 right scale 0 font ",9" nomirror
set key outside top center horizontal reverse Left samplen 2 width 1
set lmargin 14
set bmargin 9
# glibc (the baseline) grey, then sheaf, jemalloc, tcmalloc, mimalloc
set linetype 1 lc rgb "#9e9e9e"
set linetype 2 lc rgb "#2e7d32"
set linetype 3 lc rgb "#1565c0"
set linetype 4 lc rgb "#ef6c00"
set linetype 5 lc rgb "#6a1b9a"
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lw 1.5 dt 2 lc rgb "black" front
if (!exists("lt0")) lt0 = 0
plot for [i=2:n+1] data using i:xtic(1) title columnheader(i) lt (i - 1 + lt0)
