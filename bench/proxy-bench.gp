set terminal pngcairo size 800,450
set output 'bench/proxy-bench.png'
set title 'Misses: requests/s, 50 KB bodies, every request a new key (higher is better)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8
set key top left
set yrange [0:*]
set grid ytics
plot 'bench/proxy-bench.dat' using 2:xtic(1) title 'direct', '' using 3 title 'nginx, default buffers', '' using 4 title 'nginx, tuned', '' using 5 title 'imgproxy-cache'
